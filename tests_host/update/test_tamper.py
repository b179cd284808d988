"""Tamper sweep: every altered bundle is refused with a reason, and the running firmware
is untouched (``firmware/services/update.py`` under CPython on a board folder).

The board runs a confirmed slot (v2, counter 5, floor 5); the good bundle is v3 (the
firmware tree of the sim board, as source; counter 6). Altered: every bit of the
signature and of the manifest digest, every byte of the manifest, >= 4096 bit flips
spread over the files, the header, truncations, appended bytes, a file added or removed
(digest recomputed: the signature fails), the wrong key, the right key for another
board, a lower security counter. Reduced in ``make test`` (sampled); ``make update-sweep``
(``V2G_SWEEP=full``) runs every case. The counts print with ``pytest -s``.
"""

import json
import os
import shutil

import pytest

from support import update_helpers as H
from v2g.board import flash
from v2g.update import bundle

FULL = os.environ.get("V2G_SWEEP") == "full"


def _sim_tree():
    return {name: p.read_bytes() for name, p in flash.source_files("sim").items()}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    import bootslot
    from services import update

    key, pub = H.keypair(1)
    base = tmp_path_factory.mktemp("tamper")
    t1 = H.small_tree("v1")
    root = H.board_root(base / "board", t1, pub)
    with open(root + "update_floor.json", "w") as f:
        json.dump({"floor": 5}, f)
    tree = _sim_tree()
    # every file of v2 differs from v3's: the board has none of v3's files, so every byte
    # of the bundle's payload is read (a file the board already has is copied on the
    # board, hash-checked, and its bytes in the bundle are never used)
    t2 = {k: v + (b"\n# v2\n" if k.endswith(".py") else b"\n") for k, v in tree.items()}
    b2 = H.write(base / "b2.v2gu", H.make_bundle(t2, key, "2.0", 5))
    assert update.install(root, b2, board="sim")["ok"]
    assert bootslot.select(root, set_path=False) == "a"
    assert update.confirm(root)
    good = H.make_bundle(tree, key, "3.0", 6)
    return {"root": root, "base": base, "key": key, "tree": tree, "good": good}


def _live(root):
    """Everything on the board but the target slot and the staging files."""
    return {k: v for k, v in H.snapshot(root).items()
            if not k.startswith("slots/b/") and k != "upd.meta"}


def _cases(b, key, tree):
    """(label, bytes) of every altered bundle."""
    good = b["good"]
    p = bundle.parse(good)
    n = len(p.manifest_bytes)
    m0 = bundle.HEADER
    d0 = m0 + n
    s0 = d0 + bundle.DIGEST
    f0 = s0 + bundle.SIG
    step = 1 if FULL else 8

    def flip(i, bit):
        x = bytearray(good)
        x[i] ^= 1 << bit
        return bytes(x)

    for i in range(0, bundle.SIG * 8, step):
        yield "signature bit %d" % i, flip(s0 + i // 8, i % 8)
    for i in range(0, bundle.DIGEST * 8, step):
        yield "digest bit %d" % i, flip(d0 + i // 8, i % 8)
    for i in range(0, n, 1 if FULL else 13):
        x = bytearray(good)
        x[m0 + i] ^= 0xFF
        yield "manifest byte %d" % i, bytes(x)
    for i in range(bundle.HEADER):
        yield "header byte %d" % i, flip(i, 0)
    payload = len(good) - f0
    count = 4096 if FULL else 256
    for k in range(count):
        off = f0 + (k * payload) // count + (k * 7919) % max(1, payload // count)
        yield "file offset %d" % (off - f0), flip(min(off, len(good) - 1), k % 8)
    for cut in (1, 11, 12, m0 + n // 2, d0, s0, f0, f0 + 1, len(good) // 2, len(good) - 1):
        yield "truncated to %d" % cut, good[:cut]
    yield "1 byte appended", good + b"\0"
    yield "a file appended", good + tree["main.py"]

    def resigned(manifest, files, sign):
        return bundle.assemble(manifest, sign, files)

    old_sig = p.signature
    m = json.loads(p.manifest_bytes)
    m["files"].append(["extra.py", 5, H.hashlib.sha256(b"x=1\n\n").hexdigest()])
    files = dict(tree, **{"extra.py": b"x=1\n\n"})
    yield "file added (digest recomputed)", resigned(m, files, lambda d: old_sig)
    m = json.loads(p.manifest_bytes)
    gone = m["files"].pop(3)
    yield "file removed (digest recomputed)", resigned(
        m, {k: v for k, v in tree.items() if k != gone[0]}, lambda d: old_sig)
    other, _ = H.keypair(2)
    yield "wrong key", H.make_bundle(tree, other, "3.0", 6)
    yield "right key, board rp2", H.make_bundle(tree, key, "3.0", 6, board="rp2")
    yield "security counter 4 (rollback)", H.make_bundle(tree, key, "1.9", 4)


def test_tamper_sweep(board):
    from services import update

    root = board["root"]
    live = _live(root)
    path = str(board["base"] / "t.v2gu")
    counts = {}
    bad = []
    total = 0
    for label, blob in _cases(board, board["key"], board["tree"]):
        total += 1
        H.write(path, blob)
        shutil.rmtree(root + "slots/b", ignore_errors=True)  # nothing staged before
        r = update.install(root, path, board="sim")
        kind = label.split(" ")[0]
        counts[kind] = counts.get(kind, 0) + 1
        if r["ok"] or not r["reason"]:
            bad.append("%s: accepted (%r)" % (label, r))
        elif _live(root) != live:
            bad.append("%s: the running firmware changed" % label)
        if len(bad) > 10:
            break
    print("\ntamper sweep (%s): %d altered bundles, all refused: %s" % (
        "full" if FULL else "reduced", total, counts))
    assert not bad, bad
    assert counts["file"] >= (4096 if FULL else 256)
    # the good bundle still installs after all that
    H.write(path, board["good"])
    assert update.install(root, path, board="sim")["ok"]


def test_reasons_name_what_is_wrong(board, tmp_path):
    from services import update

    key, tree = board["key"], board["tree"]
    root = str(tmp_path / "b") + "/"
    shutil.copytree(board["root"], root)
    path = str(tmp_path / "x.v2gu")
    good = board["good"]
    p = bundle.parse(good)
    sig_at = bundle.HEADER + len(p.manifest_bytes) + bundle.DIGEST
    want = [
        (good[:-1], "FORMAT", "truncated"),
        (good + b"!", "FORMAT", "appended"),
        (good[:sig_at] + bytes(64) + good[sig_at + 64:], "SIGNATURE", "signature"),
        (H.make_bundle(tree, H.keypair(3)[0], "3.0", 6), "SIGNATURE", "signature"),
        (H.make_bundle(tree, key, "3.0", 6, board="rp2"), "BOARD", "'rp2'"),
        (H.make_bundle(tree, key, "0.1", 2), "COUNTER", "below the board's minimum 5"),
        (b"garbage", "FORMAT", "does not parse"),
    ]
    for blob, name, text in want:
        H.write(path, blob)
        r = update.install(root, path, board="sim")
        assert not r["ok"] and r["name"] == name and text in r["reason"], (name, r)
    os.remove(root + "update_key.pub")
    H.write(path, good)
    r = update.install(root, path, board="sim")
    assert r["name"] == "KEY" and "keys install" in r["reason"]
