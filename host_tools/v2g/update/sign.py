"""``v2g sign``: build a signed update bundle (format: ``v2g.update.bundle``).

    v2g sign --key DIR/signing.key --board B --version V --security-counter N \\
             --out BUNDLE [--min-counter M] [--tree DIR] [--source]

The tree is, by default, what ``v2g flash`` sends to board B: this checkout's firmware
(``.mpy`` for the board's arch, ``boot.py``/``main.py`` as source, the ``services/``
package) plus the board's files; ``--tree DIR`` takes the files of DIR instead (names as
they go on the board, one level of folders). The manifest records the board, version,
security counter, minimum counter, arch and ``.mpy`` version, and every file's size and
SHA-256; the signature is Ed25519 over the SHA-256 of header + manifest.

Context: host only.
"""

from pathlib import Path

from v2g.board import flash
from v2g.common import boards
from v2g.common.errors import UsageError
from v2g.update import bundle, keys


def add_arguments(p):
    p.add_argument("--key", required=True, metavar="FILE", help="signing.key (mode 0600)")
    p.add_argument("--board", required=True, help="board name or board folder")
    p.add_argument("--version", required=True, help="version text, e.g. 1.4.0")
    p.add_argument("--security-counter", required=True, type=int, metavar="N",
                   help="the bundle's security counter (boards refuse one below theirs)")
    p.add_argument("--min-counter", type=int, metavar="M", default=None,
                   help="the board's floor once this bundle is confirmed (default: N)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle file to write")
    p.add_argument("--tree", metavar="DIR", help="sign the files of DIR instead")
    p.add_argument("--source", action="store_true", help="source (.py) instead of .mpy")


def tree_from_dir(d):
    d = Path(d)
    if not d.is_dir():
        raise UsageError("--tree %s: not a folder" % d)
    tree = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            rel = p.relative_to(d).as_posix()
            if rel.count("/") > 1 or rel.startswith(".") or "/." in rel:
                raise UsageError("--tree: %s is nested too deep or hidden (one folder level)"
                                 % rel)
            tree[rel] = p.read_bytes()
    if "main.py" not in tree:
        raise UsageError("--tree %s: no main.py" % d)
    return tree


def mpy_of(tree):
    for name in sorted(tree):
        if name.endswith(".mpy") and tree[name][:1] == b"M":
            return tree[name][1], tree[name][2] & 3
    return None


def make(args):
    key = keys.load_private(args.key)
    board = boards.load(args.board)
    if args.tree:
        tree = tree_from_dir(args.tree)
    else:
        tree = flash.build_tree(args.board, board, source=args.source)
    mpy = mpy_of(tree)
    arch = boards.mpy_arch(board) if mpy else None
    return bundle.build(tree, board["name"], args.version, args.security_counter,
                        args.min_counter, arch, mpy, key), tree


def run(args):
    if args.security_counter < 0:
        raise UsageError("--security-counter must be >= 0")
    blob, tree = make(args)
    Path(args.out).write_bytes(blob)
    print("sign: %s: board %s, version %s, counter %d, %d files, %.1f kB"
          % (args.out, boards.load(args.board)["name"], args.version, args.security_counter,
             len(tree), len(blob) / 1024))
    return 0


# ---- signed configs (services/lockdown.py: leaving production mode) ----

def add_config_arguments(p):
    p.add_argument("--key", required=True, metavar="FILE", help="signing.key (mode 0600)")
    p.add_argument("--board", required=True, help="board name the config is for")
    p.add_argument("--counter", required=True, type=int, metavar="N",
                   help="above the last signed config the board used (no replay)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value, e.g. production=0 (repeatable)")
    p.add_argument("--out", required=True, metavar="FILE", help="e.g. config.signed")


def signed_config(private_key, board, counter, cfg):
    """128 hex digits of Ed25519(SHA-256(JSON)), a newline, the JSON."""
    import hashlib
    import json

    doc = json.dumps({"board": board, "counter": counter, "config": cfg},
                     separators=(",", ":"), sort_keys=True).encode()
    return private_key.sign(hashlib.sha256(doc).digest()).hex().encode() + b"\n" + doc


def run_config(args):
    import json

    cfg = {}
    for item in args.set:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError("--set %r: expected KEY=VALUE" % item)
        try:
            cfg[k] = json.loads(v)
        except ValueError:
            raise UsageError("--set %s: value %r is not a number" % (k, v)) from None
    if not cfg:
        raise UsageError("nothing to sign: give --set KEY=VALUE")
    key = keys.load_private(args.key)
    Path(args.out).write_bytes(signed_config(key, args.board, args.counter, cfg))
    print("sign-config: %s: board %s, counter %d, %s" % (args.out, args.board, args.counter,
                                                        cfg))
    return 0
