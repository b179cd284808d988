"""Power-cut sweep of a signed update on LittleFS (runs ON the MicroPython unix runtime).

    micropython update_powercut.py sweep STEP [BLOCK NBLOCKS]   # every STEP-th write
    micropython update_powercut.py verify                       # Ed25519 time, vectors

The board filesystem is ``os.VfsLfs2`` on ``powercut_runner.Flash`` (a RAM NOR flash that
loses power at write N: nothing of it, or the first half of it: torn). Set up once: the
root tree v1 (as ``v2g flash`` leaves it), the update key, the bundle file v2 (all
given on stdin as JSON: hex bytes). The swept run (every program and erase counts) is
the whole life of an update: ``update.install`` (stage into slot a, hash, verify, the
pointer rename), the trial boot (``bootslot.select``: ``tries = 1``), ``update.confirm``
(the floor, then the pointer). For each write N the run starts again from the set-up
image and the power goes at N; both images (cut, torn) are powered up:
1. the filesystem mounts; ``bootslot.select`` picks a tree, and that tree is exactly v1
   or exactly v2 (every file of its manifest, nothing missing, nothing of the other);
2. once ``confirm`` returned, it is v2;
3. a later update (bundle v3, counter 3) installs, boots in trial and is exactly v3.
Prints one JSON line: ``{"ok", "writes", "swept", "cuts", "torn", "old", "new",
"failures", "s"}``.

Context: host test tool (MicroPython unix runtime).
"""

import json
import os
import sys

import bootslot
import powercut_runner as pr
from services import ed25519, update

AT = "/pw"
ROOT = AT + "/"


def _unhex(s):
    import binascii

    return binascii.unhexlify(s)


def _write(p, data):
    with open(p, "wb") as f:
        f.write(data)


def _mkdirs(name):
    if "/" in name:
        try:
            os.mkdir(ROOT + name.split("/")[0])
        except OSError:
            pass


def setup(spec):
    """The formatted image with the v1 tree, the key and the v2 bundle file on it."""
    flash = pr.Flash(b"\xff" * (pr.BLOCK * pr.NBLOCKS))
    os.VfsLfs2.mkfs(flash)
    pr.mount(flash, AT)
    for name, data in spec["v1"].items():
        _mkdirs(name)
        _write(ROOT + name, _unhex(data))
    with open(ROOT + update.KEY, "w") as f:
        f.write(spec["pub"] + "\n")
    _write(ROOT + "b2.v2gu", _unhex(spec["b2"]))
    os.umount(AT)
    return bytes(flash.buf)


def workload(st):
    r = update.install(ROOT, ROOT + "b2.v2gu", board="sim")
    if not r["ok"]:
        raise RuntimeError("install failed: %s" % r["reason"])
    st["committed"] = True
    slot = bootslot.select(ROOT, set_path=False)
    if slot != "a" or bootslot.booted["state"] != "trial":
        raise RuntimeError("trial boot chose %s %s" % (slot, bootslot.booted))
    st["trial"] = True
    if not update.confirm(ROOT):
        raise RuntimeError("confirm refused")
    st["confirmed"] = True


def tree_is(slot, tree):
    """True when the tree ``slot`` boots is exactly ``tree`` ({name: bytes})."""
    d = bootslot.slot_dir(ROOT, slot)
    for name, data in tree.items():
        try:
            with open(d + name, "rb") as f:
                if f.read() != data:
                    return False
        except OSError:
            return False
    if slot != bootslot.ROOT_SLOT:
        names = set(update._walk(d))
        names.discard(bootslot.MANIFEST)
        if names != set(tree):
            return False
    return True


def power_up(image, st, trees, b3, label, failures, counts):
    try:
        flash = pr.Flash(image)
        pr.mount(flash, AT)
        try:
            slot = bootslot.select(ROOT, set_path=False)
            if tree_is(slot, trees["v1"]):
                counts["old"] += 1
                if st.get("confirmed"):
                    failures.append("%s: confirmed, but v1 boots" % label)
            elif tree_is(slot, trees["v2"]):
                counts["new"] += 1
            else:
                failures.append("%s: slot %s is neither v1 nor v2 (%s)" % (
                    label, slot, bootslot.booted["notes"]))
                return
            if bootslot.booted["state"] == "trial":  # a trial that booted: confirm it
                update.confirm(ROOT)
            _write(ROOT + "b3.v2gu", b3)
            r = update.install(ROOT, ROOT + "b3.v2gu", board="sim")
            if not r["ok"]:
                failures.append("%s: later update refused: %s" % (label, r["reason"]))
                return
            slot = bootslot.select(ROOT, set_path=False)
            if bootslot.booted["state"] != "trial" or not tree_is(slot, trees["v3"]):
                failures.append("%s: later update boots %s %s" % (label, slot,
                                                                  bootslot.booted))
        finally:
            os.umount(AT)
    except pr.PowerCut:
        failures.append(label + ": power-up wrote past a cut?")
    except Exception as e:  # noqa: BLE001 - every failure is reported, the sweep goes on
        failures.append("%s: %s: %s" % (label, type(e).__name__, e))


def sweep(spec, step):
    import time

    t0 = time.ticks_ms()
    trees = {k: {n: _unhex(v) for n, v in spec[k].items()} for k in ("v1", "v2", "v3")}
    b3 = _unhex(spec["b3"])
    image0 = setup(spec)
    flash = pr.Flash(image0)
    pr.mount(flash, AT)
    st = {}
    workload(st)
    os.umount(AT)
    total = flash.writes
    failures = []
    counts = {"old": 0, "new": 0}
    power_up(bytes(flash.buf), st, trees, b3, "uncut", failures, counts)
    swept = cuts = 0
    for n in range(0, total, step):
        swept += 1
        flash = pr.Flash(image0, n)
        pr.mount(flash, AT)
        st = {}
        try:
            workload(st)
            failures.append("write %d: the run ended without reaching the cut" % n)
        except Exception as e:  # noqa: BLE001 - PowerCut, or what a `with` block's close
            # raised after it (LittleFS left mid-operation): the image is frozen either way
            if flash.image is None:
                failures.append("write %d: %s: %s before the cut" % (n, type(e).__name__, e))
        try:
            os.umount(AT)
        except OSError:
            pass
        if flash.image is None:
            failures.append("write %d: no cut happened" % n)
            continue
        power_up(flash.image, st, trees, b3, "write %d" % n, failures, counts)
        power_up(flash.torn_image, st, trees, b3, "write %d torn" % n, failures, counts)
        cuts += 1
        if len(failures) > 20:
            break
    return {"ok": not failures, "writes": total, "swept": swept, "step": step, "cuts": cuts,
            "torn": cuts, "old": counts["old"], "new": counts["new"], "block": pr.BLOCK,
            "blocks": pr.NBLOCKS, "failures": failures[:20],
            "s": time.ticks_diff(time.ticks_ms(), t0) / 1000}


def verify_bench(spec):
    """Ed25519 verify time on this runtime, and the vectors: valid and flipped."""
    import time

    pub, sig, msg = _unhex(spec["pub"]), _unhex(spec["sig"]), _unhex(spec["msg"])
    times = []
    ok = True
    for _ in range(5):
        t = time.ticks_us()
        ok = ok and ed25519.verify(pub, sig, msg)
        times.append(time.ticks_diff(time.ticks_us(), t))
    bad = 0
    for i in range(0, 64 * 8, 37):
        b = bytearray(sig)
        b[i // 8] ^= 1 << (i % 8)
        bad += not ed25519.verify(pub, bytes(b), msg)
    times.sort()
    return {"ok": ok and bad == len(range(0, 512, 37)), "valid": ok, "rejected": bad,
            "us_min": times[0], "us_median": times[2]}


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "sweep"
    spec = json.loads(sys.stdin.read())
    if what == "sweep":
        pr.NBLOCKS = 128  # 64 KB: two trees, a bundle and the slot beside them
        if len(sys.argv) > 3:
            pr.BLOCK, pr.NBLOCKS = int(sys.argv[3]), int(sys.argv[4])
        out = sweep(spec, int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    elif what == "verify":
        out = verify_bench(spec)
    else:
        print("usage: update_powercut.py sweep [STEP [BLOCK NBLOCKS]] | verify")
        sys.exit(2)
    print(json.dumps(out))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
