"""Signing energy records: a per-station Ed25519 key the daemon reads from a private file.

The daemon signs each record's canonical bytes (``EnergyRecord.canonical_bytes``) before it
enters the outbox; the ledger verifies with the station's public key, so a back end that
leaks its key files cannot forge a station's records (unlike a shared HMAC secret).

Key files (PEM, PKCS#8, unencrypted, Ed25519): owned by the daemon user, mode 0600 or
0400. A key file that group or others may read is refused with its path and mode, and so
is a missing or unreadable one. Key bytes are never logged, printed or put in an error
message; only the file name and the key id (the station id) are.

Where a PKCS#11 HSM plugs in: ``Signer`` is the whole interface the outbox uses
(``alg``, ``key_id``, ``sign(data) -> bytes``). An HSM signer keeps the private key in the
token and implements ``sign`` with ``C_SignInit(CKM_EDDSA)`` + ``C_Sign`` on the key object
found by its label (e.g. with the ``python-pkcs11`` package: ``session.get_key(label=...,
object_class=PRIVATE_KEY).sign(data, mechanism=Mechanism.EDDSA)``); the daemon config then
names ``billing.signing_key: pkcs11:token=...;object=...`` instead of a file, and
``make_signer`` returns that signer. Ed25519 in PKCS#11 needs a v3.0 token; a token with
only v2.40 mechanisms can use ECDSA P-256 (``CKM_ECDSA``) with the same interface and
``alg = "ecdsa-p256"`` on the ledger side. The TLS client key moves into the token the same
way (an OpenSSL provider/engine for PKCS#11); that part is not wired here.

Context: host (daemon; the ledger uses ``load_public_key`` / ``verify``).
"""

import os
import stat

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from v2g.common.errors import UsageError

ALG = "ed25519"


class KeyFileError(UsageError):
    """A key or certificate file that is missing, unreadable, too open or malformed."""


def check_private_file(path, what):
    """Refuse a private file (key) that is missing, not a file or readable by group/others.

    ``what`` names the config key (``billing.signing_key``). Returns the path.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyFileError("%s %s: no such file" % (what, path)) from None
    except OSError as e:
        raise KeyFileError("%s %s: %s" % (what, path, e.strerror)) from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError("%s %s: not a regular file" % (what, path))
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFileError("%s %s: mode %04o lets group/others read or write it; allowed: "
                           "0600 or 0400, owned by the daemon user (chmod 600 %s)"
                           % (what, path, mode, path))
    return path


def read_private_file(path, what):
    """The bytes of a private file after ``check_private_file``; errors name the file."""
    check_private_file(path, what)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise KeyFileError("%s %s: %s" % (what, path, e.strerror)) from None


class Signer:
    """Ed25519 signer over a key file (the interface an HSM signer also implements)."""

    alg = ALG

    def __init__(self, key_id, private_key):
        self.key_id = key_id
        self._key = private_key

    def sign(self, data):
        """Signature (64 bytes) of ``data`` (bytes)."""
        return self._key.sign(data)

    def public_pem(self):
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __repr__(self):  # never the key
        return "Signer(alg=%r, key_id=%r)" % (self.alg, self.key_id)


def make_signer(path, key_id, what="billing.signing_key"):
    """Load the Ed25519 private key at ``path`` (checked private) as a ``Signer``."""
    data = read_private_file(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError("%s %s: not an unencrypted PEM private key" % (what, path)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError("%s %s: %s key; allowed: Ed25519" % (what, path, type(key).__name__))
    return Signer(key_id, key)


def write_new_key(path):
    """Create a new Ed25519 private key file at ``path`` (mode 0600); returns its signer's
    public key as PEM bytes. Refuses to overwrite an existing file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path):
    """An Ed25519 public key from a PEM file (the ledger's ``<station>.pub``)."""
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
    except OSError as e:
        raise KeyFileError("public key %s: %s" % (path, e.strerror)) from None
    except ValueError:
        raise KeyFileError("public key %s: not a PEM public key" % path) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError("public key %s: %s; allowed: Ed25519" % (path, type(key).__name__))
    return key


def verify(public_key, signature, data):
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``data``."""
    try:
        public_key.verify(signature, data)
        return True
    except InvalidSignature:
        return False
