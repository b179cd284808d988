"""The update bundle: one file, a header, a JSON manifest, its digest, its signature and
the files.

    blob = bundle.build(tree, board="sim", version="1.2.0", counter=5, min_counter=5,
                        arch="x64", mpy=(6, 3), private_key=key)
    b = bundle.parse(blob)      # Bundle: .manifest, .digest, .signature, .files {name: bytes}

Layout (little-endian; MCUboot's image: a header, protected metadata, a hash over header
and metadata, a signature of that hash, then the payload the metadata describes):

    0   "V2GU" | u8 format (1) | u8 0 | u16 0 | u32 n     12-byte header
    12  manifest: n bytes of UTF-8 JSON
        {"format": 1, "board": "sim", "version": "1.2.0", "counter": 5,
         "min_counter": 5, "arch": "x64", "mpy": [6, 3],
         "files": [[name, size, sha256 hex], ...]}       names sorted; "services/x.mpy"
    12+n      32 bytes: SHA-256(header + manifest)       the manifest digest
    12+n+32   64 bytes: Ed25519 signature of that digest
    12+n+96   the files' bytes, in manifest order, back to back; nothing after them

``counter`` is the bundle's security counter: the board refuses a bundle below its floor.
``min_counter`` (<= counter) is what the floor becomes once this bundle is confirmed (the
oldest counter still allowed to boot; default: ``counter``, no rollback at all).

Context: host only.
"""

import hashlib
import json
import struct

from v2g.common.errors import UsageError

MAGIC = b"V2GU"
FORMAT = 1
HEADER = 12
DIGEST = 32
SIG = 64
SUFFIX = ".v2gu"


class Bundle:
    def __init__(self, header, manifest_bytes, manifest, digest, signature, files):
        self.header = header
        self.manifest_bytes = manifest_bytes
        self.manifest = manifest
        self.digest = digest
        self.signature = signature
        self.files = files  # {name: bytes}, manifest order

    @property
    def meta(self):
        """header + manifest + digest + signature: what the board checks first."""
        return self.header + self.manifest_bytes + self.digest + self.signature


def manifest_for(tree, board, version, counter, min_counter, arch, mpy):
    return {"format": FORMAT, "board": board, "version": version, "counter": counter,
            "min_counter": min_counter, "arch": arch, "mpy": list(mpy) if mpy else None,
            "files": [[n, len(tree[n]), hashlib.sha256(tree[n]).hexdigest()]
                      for n in sorted(tree)]}


def assemble(manifest, sign, tree):
    """Bytes of a bundle: ``sign(digest) -> 64 bytes``."""
    mb = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    header = MAGIC + struct.pack("<BBHI", FORMAT, 0, 0, len(mb))
    digest = hashlib.sha256(header + mb).digest()
    sig = sign(digest)
    if len(sig) != SIG:
        raise ValueError("signature is %d bytes, expected %d" % (len(sig), SIG))
    return b"".join([header, mb, digest, sig] + [tree[e[0]] for e in manifest["files"]])


def build(tree, board, version, counter, min_counter, arch, mpy, private_key):
    """A signed bundle (``private_key``: cryptography's Ed25519PrivateKey)."""
    if min_counter is None:
        min_counter = counter
    if not 0 <= min_counter <= counter < 1 << 31:
        raise UsageError("need 0 <= minimum counter (%d) <= security counter (%d) < 2**31"
                         % (min_counter, counter))
    m = manifest_for(tree, board, version, counter, min_counter, arch, mpy)
    return assemble(m, private_key.sign, tree)


def parse(blob, what="bundle"):
    """A ``Bundle`` from bytes; ``UsageError`` naming what does not parse. The signature
    is not checked here (the board does that with its own key)."""
    if len(blob) < HEADER or blob[:4] != MAGIC:
        raise UsageError("%s: not an update bundle (no %r header)" % (what, MAGIC.decode()))
    fmt, r1, r2, n = struct.unpack_from("<BBHI", blob, 4)
    if fmt != FORMAT or r1 or r2:
        raise UsageError("%s: bundle format %d, this tool reads %d" % (what, fmt, FORMAT))
    end = HEADER + n + DIGEST + SIG
    if len(blob) < end:
        raise UsageError("%s: bundle does not parse: truncated (%d bytes, the header "
                         "announces at least %d)" % (what, len(blob), end))
    mb = blob[HEADER:HEADER + n]
    try:
        m = json.loads(mb)
        files = m["files"]
        sizes = [(e[0], int(e[1])) for e in files]
        for key in ("board", "version", "counter", "min_counter"):
            m[key]  # noqa: B018 - presence
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise UsageError("%s: bundle does not parse: manifest (%s)" % (what, e)) from None
    total = end + sum(s for _, s in sizes)
    if len(blob) != total:
        raise UsageError("%s: bundle does not parse: %d bytes, its manifest describes %d (%s)"
                         % (what, len(blob), total,
                            "truncated" if len(blob) < total else "bytes appended"))
    out = {}
    off = end
    for name, size in sizes:
        out[name] = blob[off:off + size]
        off += size
    return Bundle(blob[:HEADER], mb, m, blob[HEADER + n:HEADER + n + DIGEST],
                  blob[HEADER + n + DIGEST:end], out)
