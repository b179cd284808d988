"""``v2g keys``: the Ed25519 signing key pair, and the public key onto a development board.

    v2g keys new --out DIR                 # DIR/signing.key (mode 0600), DIR/signing.pub
    v2g keys install --pub DIR/signing.pub --port PORT [--replace]

``signing.key`` is PKCS#8 PEM, unencrypted, created with mode 0600 in a folder of mode
0700; it never goes near the repository or a board. A key file that the group or others
can read is refused wherever it is used (``load_private``). ``signing.pub`` is the raw
32-byte public key as 64 hex digits, the form the board keeps in ``update_key.pub``.
``keys install`` writes that file over the REPL (a development board; a board in
production has no REPL: its key comes with its factory tree). Replacing a different key
needs ``--replace``.

Context: host only.
"""

import os
import stat
from pathlib import Path

from v2g.common.errors import UsageError

KEY_NAME = "signing.key"
PUB_NAME = "signing.pub"
BOARD_KEY = "update_key.pub"  # firmware/services/update.py KEY


def add_arguments(p):
    sub = p.add_subparsers(dest="keys_cmd", required=True)
    n = sub.add_parser("new", help="create a signing key pair")
    n.add_argument("--out", required=True, metavar="DIR", help="folder for the key pair")
    i = sub.add_parser("install", help="put the public key on a development board")
    i.add_argument("--pub", required=True, metavar="FILE", help="signing.pub")
    i.add_argument("--port", required=True, help="serial port of the board")
    i.add_argument("--replace", action="store_true",
                   help="replace a different key the board already has")


def _ed25519():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519, serialization


def public_hex(private_key):
    _, ser = _ed25519()
    return private_key.public_key().public_bytes(ser.Encoding.Raw,
                                                 ser.PublicFormat.Raw).hex()


def new_pair(out_dir):
    """Create DIR/signing.key (0600) and DIR/signing.pub; returns their paths."""
    ed, ser = _ed25519()
    out = Path(out_dir)
    key_path, pub_path = out / KEY_NAME, out / PUB_NAME
    if key_path.exists() or pub_path.exists():
        raise UsageError("%s: a key pair is already there; refusing to overwrite it" % out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ed.Ed25519PrivateKey.generate()
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(key_path, 0o600)  # whatever the umask
    pub_path.write_text(public_hex(key) + "\n")
    return key_path, pub_path


def load_private(path):
    """The Ed25519 private key of ``path``; ``UsageError`` when it is missing, readable
    by group or others, or not an Ed25519 key."""
    ed, ser = _ed25519()
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise UsageError("key file %s does not exist (create one with `v2g keys new --out "
                         "DIR`)" % p) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError("key file %s is accessible by group or others (mode %04o); a "
                         "signing key must be private: chmod 600 %s"
                         % (p, stat.S_IMODE(st.st_mode), p))
    try:
        key = ser.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise UsageError("key file %s: not a PEM private key (%s)" % (p, e)) from None
    if not isinstance(key, ed.Ed25519PrivateKey):
        raise UsageError("key file %s: not an Ed25519 key" % p)
    return key


def load_public_hex(path):
    try:
        text = Path(path).read_text().strip()
        raw = bytes.fromhex(text)
    except (OSError, ValueError) as e:
        raise UsageError("public key %s: unreadable or not hex (%s)" % (path, e)) from None
    if len(raw) != 32:
        raise UsageError("public key %s: %d bytes, an Ed25519 key has 32" % (path, len(raw)))
    return text.lower()


def run(args):
    if args.keys_cmd == "new":
        key_path, pub_path = new_pair(args.out)
        print("keys: %s (private, mode 0600; keep it off boards and out of the repository)"
              % key_path)
        print("keys: %s (public: `v2g keys install --pub %s --port PORT`)" % (pub_path,
                                                                               pub_path))
        return 0
    from v2g.board.console import BoardLink

    pub = load_public_hex(args.pub)
    with BoardLink(args.port) as link:
        try:
            have = link.read(BOARD_KEY).decode().strip().lower()
        except Exception:  # noqa: BLE001 - no key file on the board yet
            have = None
        if have == pub:
            print("keys: the board already has this key")
            return 0
        if have and not args.replace:
            raise UsageError("the board on %s has a different update key; --replace to "
                             "replace it (bundles signed with the old key are then refused)"
                             % args.port)
        link.write_atomic(BOARD_KEY, (pub + "\n").encode())
    print("keys: public key installed on the board (%s)" % BOARD_KEY)
    return 0
