"""Power-cut sweep of a signed update on LittleFS, and Ed25519 on the MicroPython runtime.

- ``host_tools/v2g/build/mp/update_powercut.py sweep``: the whole life of an update (stage,
  verify, pointer rename, trial boot, confirm) on ``os.VfsLfs2`` over a RAM flash that
  loses power at write N (clean and torn); every image boots exactly the old or the new
  tree and takes a later update. Full (every write, 512 x 128 and 4096 x 48 blocks) with
  ``V2G_SWEEP=full`` (``make update-sweep``); sampled (every 4th write, 512-byte blocks)
  in ``make test``;
- ``verify``: the board's verifier against signatures made by ``cryptography`` (valid and
  bit-flipped), and its time on this runtime (printed; docs/update.md quotes it).
"""

import json
import os

import pytest

from support import update_helpers as H
from v2g.common import paths, runtime

FULL = os.environ.get("V2G_SWEEP") == "full"
RUNNER = paths.MP_DIR / "update_powercut.py"


def _spec():
    key, pub = H.keypair()
    t1, t2 = H.small_tree("v1"), H.small_tree("v2")
    t3 = H.small_tree("v3", sizes=(900, 1200, 2000, 300))
    msg = bytes(range(32))
    return {"pub": pub, "v1": {k: v.hex() for k, v in t1.items()},
            "v2": {k: v.hex() for k, v in t2.items()},
            "v3": {k: v.hex() for k, v in t3.items()},
            "b2": H.make_bundle(t2, key, "2.0", 2).hex(),
            "b3": H.make_bundle(t3, key, "3.0", 3).hex(),
            "sig": key.sign(msg).hex(), "msg": msg.hex()}


def _run(exe, *args):
    # an explicit heap: the flash images and update trees outgrow a 32-bit build's default
    # 1 MB heap (the 64-bit runtime's default is 2 MB)
    r = runtime.run_micropython(RUNNER, [str(a) for a in args],
                                stdin_bytes=json.dumps(_spec()).encode(), exe=exe,
                                timeout=600, heapsize="8M")
    out = r.stdout.decode("utf-8", "replace")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, "runner printed no result (exit %d): %s %s" % (
        r.returncode, out[-2000:], r.stderr.decode("utf-8", "replace")[-2000:])
    return r.returncode, json.loads(lines[-1])


GEOMETRIES = [(512, 128), (4096, 48)] if FULL else [(512, 128)]


@pytest.mark.parametrize("block,blocks", GEOMETRIES)
def test_power_cut_at_every_write_of_an_update(micropython_exe, block, blocks):
    step = 1 if FULL else 4
    rc, res = _run(micropython_exe, "sweep", step, block, blocks)
    print("\nupdate power-cut sweep, VfsLfs2 %d x %d B, every %swrite: %d writes, %d cut "
          "(%d images powered up, clean and torn): old tree %d, new tree %d, never a mix; "
          "a later update took every time; %.1f s"
          % (blocks, block, "" if step == 1 else "%dth " % step, res["writes"], res["cuts"],
             2 * res["cuts"] + 1, res["old"], res["new"], res["s"]))
    assert res["failures"] == [], res["failures"]
    assert rc == 0 and res["ok"] is True
    assert res["old"] > 0 and res["new"] > 0 and res["writes"] >= 100


def test_ed25519_on_micropython(micropython_exe):
    rc, res = _run(micropython_exe, "verify")
    print("\nEd25519 verify on the unix runtime: %.1f ms (min %.1f ms)"
          % (res["us_median"] / 1000, res["us_min"] / 1000))
    assert rc == 0 and res["valid"] is True and res["ok"] is True, res


def test_ed25519_matches_cryptography_cpython():
    import hashlib

    from services import ed25519

    key, pub = H.keypair(7)
    pub = bytes.fromhex(pub)
    for i in range(40):
        msg = hashlib.sha256(b"%d" % i).digest()
        sig = key.sign(msg)
        assert ed25519.verify(pub, sig, msg)
        bad = bytearray(sig)
        bad[i % 64] ^= 1 << (i % 8)
        assert not ed25519.verify(pub, bytes(bad), msg)
        assert not ed25519.verify(pub, sig, msg[:-1] + bytes([msg[-1] ^ 1]))
    # non-canonical S (S + L) and a key that is no point are refused, not raised
    s = int.from_bytes(sig[32:], "little") + ed25519.L
    assert not ed25519.verify(pub, sig[:32] + s.to_bytes(32, "little"), msg)
    assert not ed25519.verify(b"\xff" * 32, sig, msg)
    assert not ed25519.verify(pub[:31], sig, msg)
    # the Python SHA-512 (ports without hashlib.sha512) equals hashlib's
    saved = hashlib.sha512
    try:
        del hashlib.sha512
        vals = [ed25519.sha512(bytes(range(n % 256)) * (n // 256 + 1)) for n in (0, 3, 111,
                                                                                  112, 300)]
    finally:
        hashlib.sha512 = saved
    assert vals == [hashlib.sha512(bytes(range(n % 256)) * (n // 256 + 1)).digest()
                    for n in (0, 3, 111, 112, 300)]
