"""The update agent: stage a signed bundle into the inactive slot, verify it, switch.

    import services.update as U
    r = U.begin("", "upd.meta")       # header + manifest + digest + signature, as a file
    # ... the files in r["need"] are written into r["dir"] (the REPL or the link) ...
    r = U.commit("")                  # every file hashed, signature checked, pointer switched
    r = U.install("", "x.v2gu")       # the same from a whole bundle file on the board

Results are dicts ``{"ok": bool, "code": V_*, "reason": text, ...}`` (a VerifyResult, as
MCUboot's ``image.py`` returns one, instead of exceptions). Checks, in order: the bundle's
form (``bootslot.parse_meta``), the manifest digest (SHA-256 of header + manifest), the
Ed25519 signature of that digest with the board's key (``update_key.pub``, 64 hex
digits: the board holds only the public key), the board name, the security counter
against the board's floor, the code arch; at commit all of that again from the copy in
the slot, then every file's size and SHA-256. Only then the pointer (``bootslot``) names
the new slot, in trial: the next boot runs it once; ``confirm_task`` confirms it after
``upd_confirm_s`` of grid sync without a fault (raising the floor to the bundle's
``min_counter``); anything else reverts at the next boot.

The running tree is never written: the target is the slot the pointer does not name
(``a`` when the root tree runs; the previous slot is given up, in the pointer first,
before it is overwritten). Refused while a trial runs, and while the converter is
energized (a flash write stalls the tick on rp2).

RAM: the manifest blob and its parsed form (~45 files: about 4 KB + 8 KB), a 1 KB copy
buffer, the verifier's integers (< 2 KB live; it allocates all the time): ~14 KB at the
peak, during an update only. Verification time: docs/update.md.
Context: REPL / services (asyncio), never the tick.
"""

import json
import os

import bootslot

from services import ed25519

KEY = "update_key.pub"
META = "upd.meta"  # where begin() reads the metadata blob by default

V_OK = 0
V_FORMAT = 1
V_DIGEST = 2
V_KEY = 3
V_SIGNATURE = 4
V_BOARD = 5
V_COUNTER = 6
V_ARCH = 7
V_FILE = 8
V_BUSY = 9
V_IO = 10
NAMES = ("OK", "FORMAT", "DIGEST", "KEY", "SIGNATURE", "BOARD", "COUNTER", "ARCH", "FILE",
         "BUSY", "IO")

# MicroPython's MP_NATIVE_ARCH_* numbers (bits 10.. of sys.implementation._mpy)
ARCHES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
          7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc"}

_state = {"target": None}


def _r(code, reason="", **kw):
    d = {"ok": code == V_OK, "code": code, "name": NAMES[code], "reason": reason}
    d.update(kw)
    return d


def board_arch():
    """(mpy version, arch name or None) of this runtime, or (None, None)."""
    import sys

    v = getattr(sys.implementation, "_mpy", 0)
    if not v:
        return None, None
    return v & 0xFF, ARCHES.get(v >> 10)


def board_name(root=""):
    try:
        with open(bootslot.path("board.json", root)) as f:
            return json.load(f).get("name")
    except (OSError, ValueError):
        return None


def read_key(root=""):
    """The board's 32-byte public key, or None."""
    import binascii

    try:
        with open(root + KEY) as f:
            text = f.read().strip()
        key = binascii.unhexlify(text)
    except (OSError, ValueError):
        return None
    return key if len(key) == 32 else None


def check_meta(root, blob, board, feed=None):
    """Everything but the files. Returns ``(result, manifest, digest hex)``."""
    out = [None]
    for _ in check_meta_steps(root, blob, board, out):
        if feed is not None:
            feed()
    return out[0]


def check_meta_steps(root, blob, board, out):
    """Generator form of ``check_meta``: yields within the signature check (every 16 bits
    of its scalar loop); ``out[0]`` is ``(result, manifest, digest hex)`` when it ends."""
    res, sig_in = _check_meta(root, blob, board)
    if res is None:
        yield  # the manifest parsed and its digest taken: one step
        key, sig, dg, m = sig_in
        ok = [False]
        yield from ed25519.verify_steps(key, sig, dg, ok)
        res = _check_rest(root, board, m, dg, ok[0])
    out[0] = res


def _check_meta(root, blob, board):
    """The checks before the signature: ``(refusal, None)``, or ``(None, (key,
    signature, digest, manifest))`` when the signature comes next."""
    try:
        m, end = bootslot.parse_meta(blob)
    except ValueError as e:
        return (_r(V_FORMAT, "bundle does not parse: %s" % e), None, None), None
    mend = end - bootslot.DIGEST - bootslot.SIG
    dg = bootslot.meta_digest(blob, mend)
    if dg != bytes(blob[mend:mend + bootslot.DIGEST]):
        return (_r(V_DIGEST, "manifest digest does not match the manifest (altered)"), m,
                None), None
    key = read_key(root)
    if key is None:
        return (_r(V_KEY, "the board has no update key (%s); install it with `v2g keys "
                          "install`" % KEY), m, None), None
    return None, (key, blob[mend + bootslot.DIGEST:end], dg, m)


def _check_rest(root, board, m, dg, sig_ok):
    if not sig_ok:
        return _r(V_SIGNATURE, "signature does not verify with the board's key (wrong key "
                               "or altered)"), m, None
    if board is not None and m["board"] != board:
        return _r(V_BOARD, "bundle is for board '%s', this board is '%s'" % (
            m["board"], board)), m, None
    floor = bootslot.read_floor(root)
    if m["counter"] < floor:
        return _r(V_COUNTER, "security counter %d below the board's minimum %d (rollback "
                             "refused)" % (m["counter"], floor)), m, None
    mpy, arch = board_arch()
    if m.get("arch") and arch and m["arch"] != arch and any(
            e[0].endswith(".mpy") for e in m["files"]):
        return _r(V_ARCH, "bundle code is for %s, this board runs %s" % (m["arch"], arch)), \
            m, None
    if m.get("mpy") and mpy and m["mpy"][0] != mpy:
        return _r(V_ARCH, "bundle .mpy v%d, this board runs v%d" % (m["mpy"][0], mpy)), m, None
    return _r(V_OK), m, bootslot._hex(dg)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def _mkdir(p):
    try:
        os.mkdir(p)
    except OSError:
        pass


def _walk(d, prefix=""):
    """Relative file names under directory ``d`` (one level of subfolders)."""
    out = []
    try:
        names = os.listdir(d or ".")
    except OSError:
        return out
    for n in names:
        try:
            is_dir = os.stat(d + n)[0] & 0x4000
        except OSError:
            continue
        if is_dir:
            for sub in _walk(d + n + "/", prefix + n + "/"):
                out.append(sub)
        else:
            out.append(prefix + n)
    return out


HASH_STEP_BLOCKS = 4  # a hashing step covers this many buffer loads (4 KB at 1 KB)


def _hash_steps(p, buf, out):
    """``bootslot.sha256_file`` in steps: yields every ``HASH_STEP_BLOCKS`` reads;
    ``out[0]`` is ``(size, digest)`` or None (unreadable) when it ends."""
    import hashlib

    out[0] = None
    mv = memoryview(buf)
    h = hashlib.sha256()
    size = 0
    k = 0
    try:
        f = open(p, "rb")
    except OSError:
        return
    try:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
            size += n
            k += 1
            if k % HASH_STEP_BLOCKS == 0:
                yield
    except OSError:
        return
    finally:
        f.close()
    out[0] = (size, h.digest())


def _matches(got, size, sha_hex):
    return got is not None and got[0] == size and bootslot._hex(got[1]) == sha_hex


def _run(steps, out, feed):
    for _ in steps:
        if feed is not None:
            feed()
    return out[0]


def _copy(src, dst, buf):
    mv = memoryview(buf)
    with open(src, "rb") as f, open(dst, "wb") as g:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            g.write(mv[:n])


def _energized():
    import sys

    main = sys.modules.get("main") or sys.modules.get("__main__")
    app = getattr(main, "_app", None)
    sup = getattr(app, "supervisor", None)
    return getattr(sup, "state", None) in ("ENERGIZED", "DERATED")


def begin(root="", meta_path=None, board=None, feed=None):
    """Check the metadata blob and prepare the inactive slot. Returns a result with
    ``slot``, ``dir`` (where the files go), ``need`` ([name, size] the board lacks) and
    ``kept`` (files already there or copied from the running tree); ``same``: the board
    already runs this bundle (nothing to do). ``feed()`` is called at every step."""
    out = [None]
    return _run(begin_steps(root, meta_path, board, out), out, feed)


def begin_steps(root, meta_path, board, out):
    """Generator form of ``begin`` (the link's update service runs it as an asyncio
    task): yields within the signature check and every few KB hashed or copied;
    ``out[0]`` is the result when it ends."""
    out[0] = None
    try:
        with open(meta_path or root + META, "rb") as f:
            blob = f.read(bootslot.HEADER + bootslot.MAX_MANIFEST + 96)
    except OSError as e:
        out[0] = _r(V_IO, "cannot read the bundle metadata: %s" % e)
        return
    if board is None:
        board = board_name(root)
    co = [None]
    yield from check_meta_steps(root, blob, board, co)
    res, m, dg = co[0]
    if not res["ok"]:
        out[0] = res
        return
    ptr = bootslot.read_pointer(root) or {"active": bootslot.ROOT_SLOT, "state": "ok",
                                          "tries": 0, "prev": None, "digest": None}
    if ptr["state"] == "trial":
        out[0] = _r(V_BUSY, "a trial of %s is running; it must be confirmed or reverted "
                            "first" % ptr.get("version"))
        return
    if ptr.get("digest") == dg:
        out[0] = _r(V_OK, "the board already runs this bundle", same=True, need=[], kept=0,
                    slot=ptr["active"], version=m["version"])
        return
    if _energized():
        out[0] = _r(V_BUSY, "the converter is energized; updates are staged while it is "
                            "de-energized")
        return
    active = ptr["active"]
    target = "b" if active == "a" else "a"
    if ptr.get("prev") == target:
        ptr["prev"] = None  # the fallback is given up before it is overwritten
        ptr["prev_digest"] = None
        bootslot.write_pointer(root, ptr)
    d = bootslot.slot_dir(root, target)
    _mkdir(root + bootslot.SLOTS)
    _mkdir(d[:-1])
    names = set(e[0] for e in m["files"])
    for n in _walk(d):
        if n not in names:
            os.remove(d + n)
    for e in m["files"]:
        if "/" in e[0]:
            _mkdir(d + e[0].split("/")[0])
    with open(d + bootslot.MANIFEST, "wb") as f:
        f.write(blob[:bootslot.parse_meta(blob)[1]])
    yield  # the slot prepared: one step
    buf = bytearray(1024)
    src = bootslot.slot_dir(root, active)
    need = []
    kept = 0
    got = [None]
    for name, size, sha in m["files"]:
        yield from _hash_steps(d + name, buf, got)
        if _matches(got[0], size, sha):
            kept += 1
            continue
        yield from _hash_steps(src + name, buf, got)
        if _matches(got[0], size, sha):
            _copy(src + name, d + name, buf)
            kept += 1
            yield
        else:
            need.append([name, size])
    _state["target"] = target
    out[0] = _r(V_OK, slot=target, dir=d, need=need, kept=kept, same=False,
                version=m["version"])


def commit(root="", board=None, feed=None):
    """Verify the staged slot again from its own copy and switch the pointer to it (in
    trial). The running tree is untouched when this returns a failure."""
    out = [None]
    return _run(commit_steps(root, board, out), out, feed)


def commit_steps(root, board, out):
    """Generator form of ``commit``: yields within the signature check and every few KB
    hashed; ``out[0]`` is the result when it ends. The pointer is written last, in one
    step."""
    out[0] = None
    ptr = bootslot.read_pointer(root) or {"active": bootslot.ROOT_SLOT, "state": "ok",
                                          "tries": 0, "prev": None, "digest": None}
    if ptr["state"] == "trial":
        out[0] = _r(V_BUSY, "a trial is running")
        return
    target = "b" if ptr["active"] == "a" else "a"
    d = bootslot.slot_dir(root, target)
    try:
        blob, m, end = bootslot.read_meta(d + bootslot.MANIFEST)
    except (OSError, ValueError) as e:
        out[0] = _r(V_FORMAT, "staged manifest unreadable: %s" % e)
        return
    if board is None:
        board = board_name(root)
    co = [None]
    yield from check_meta_steps(root, blob, board, co)
    res, m, dg = co[0]
    if not res["ok"]:
        out[0] = res
        return
    buf = bytearray(1024)
    names = set()
    got = [None]
    for name, size, sha in m["files"]:
        names.add(name)
        yield from _hash_steps(d + name, buf, got)
        g = got[0]
        if g is None:
            out[0] = _r(V_FILE, "file %s missing after writing" % name)
            return
        if g[0] != size:
            out[0] = _r(V_FILE, "file %s: %d bytes written, the manifest says %d" % (
                name, g[0], size))
            return
        if bootslot._hex(g[1]) != sha:
            out[0] = _r(V_FILE, "file %s: SHA-256 differs from the manifest" % name)
            return
    for n in _walk(d):
        if n not in names and n != bootslot.MANIFEST:
            out[0] = _r(V_FILE, "file %s in the slot is not in the manifest" % n)
            return
    new = {"active": target, "state": "trial", "tries": 0, "digest": dg,
           "version": m["version"], "counter": m["counter"], "min_counter": m["min_counter"],
           "prev": ptr["active"], "prev_digest": ptr.get("digest"),
           "prev_version": ptr.get("version"), "prev_counter": ptr.get("counter"),
           "why": None}
    bootslot.write_pointer(root, new)  # the switch: one rename
    _state["target"] = None
    out[0] = _r(V_OK, "staged in slot %s; the next boot runs it in trial" % target,
                slot=target, version=m["version"])


def install(root, bundle_path, board=None, feed=None):
    """Apply a whole bundle file on the board's filesystem (begin, copy, commit)."""
    try:
        f = open(bundle_path, "rb")
    except OSError as e:
        return _r(V_IO, "cannot open %s: %s" % (bundle_path, e))
    try:
        head = f.read(bootslot.HEADER)
        mlen = int.from_bytes(head[8:12], "little") if len(head) == bootslot.HEADER else 0
        if mlen > bootslot.MAX_MANIFEST:
            return _r(V_FORMAT, "bundle does not parse: manifest length %d" % mlen)
        blob = head + f.read(mlen + bootslot.DIGEST + bootslot.SIG)
        try:
            m, end = bootslot.parse_meta(blob)
        except ValueError as e:
            return _r(V_FORMAT, "bundle does not parse: %s" % e)
        total = end + sum(e[1] for e in m["files"])
        size = os.stat(bundle_path)[6]
        if size != total:
            return _r(V_FORMAT, "bundle is %d bytes, its manifest describes %d (%s)" % (
                size, total, "truncated" if size < total else "bytes appended"))
        meta = root + META
        with open(meta, "wb") as g:
            g.write(blob)
        res = begin(root, meta, board, feed)
        if not res["ok"] or res.get("same"):
            return res
        need = set(e[0] for e in res["need"])
        off = end
        buf = bytearray(1024)
        for name, size, _ in m["files"]:
            if name in need:
                f.seek(off)
                left = size
                with open(res["dir"] + name, "wb") as g:
                    while left:
                        n = f.readinto(memoryview(buf)[:min(left, len(buf))])
                        if not n:
                            break
                        g.write(memoryview(buf)[:n])
                        left -= n
            off += size
    finally:
        f.close()
    return commit(root, board, feed)


def status(root=""):
    """What the host shows: the pointer, the running slot, the floor, the key."""
    return {"booted": bootslot.booted, "pointer": bootslot.read_pointer(root),
            "floor": bootslot.read_floor(root), "key": read_key(root) is not None,
            "board": board_name(root)}


# ---- trial confirmation (supervisor side) ----

HEALTHY_STATES = ("ENTER_SERVICE_DELAY", "ENERGIZED", "DERATED")  # grid synced, no fault
FAULT_STATES = ("TRIPPED", "FAULT_LOCKOUT")


def confirm(root=""):
    """Make the running trial permanent: the floor first (it only grows), then the
    pointer. Returns True when it did."""
    ptr = bootslot.read_pointer(root)
    if ptr is None or ptr["state"] != "trial" or ptr["active"] != bootslot.booted["slot"]:
        return False
    floor = bootslot.read_floor(root)
    want = ptr.get("min_counter") or 0
    if want > floor:
        bootslot.write_atomic(root + bootslot.FLOOR, json.dumps({"floor": want}))
    ptr["state"] = "ok"
    ptr["tries"] = 0
    ptr["why"] = None
    bootslot.write_pointer(root, ptr)
    bootslot.booted["state"] = "ok"
    return True


class Confirmer:
    """Counts healthy supervisor time while a trial runs; confirms at ``need_ms``.
    ``step(now_ms, state)`` each period; returns True when it confirmed."""

    def __init__(self, need_ms, root=""):
        self.need_ms = need_ms
        self.root = root
        self.since = None
        self.done = not bootslot.in_trial()

    def step(self, now_ms, state, flash_held=False):
        """``flash_held``: a flash write would stall the energized converter's tick
        (``App.flash_held``): once healthy long enough, the confirmation waits for a
        de-energized period (still healthy: ENTER_SERVICE_DELAY, or any state after it)."""
        if self.done:
            return False
        if self.since is not None and (now_ms - self.since) & 0x3FFFFFFF >= self.need_ms:
            if state in FAULT_STATES:
                self.since = None  # a trip before the write: not confirmed
                return False
            if flash_held:
                return False  # due; written once the converter is de-energized
            self.done = True
            return confirm(self.root)
        if state not in HEALTHY_STATES:
            self.since = None
            return False
        if self.since is None:
            self.since = now_ms
        return False


def attach(app):
    """main.py: journal what the boot chose and why; returns the confirm task maker."""
    j = app.journal
    for note in bootslot.booted["notes"]:
        j.fault(0, "0x70" if "not confirmed" in note else "0x72", note)
    if bootslot.in_trial():
        j.add(0, "update", "", "TRIAL", "slot %s version %s" % (
            bootslot.booted["slot"], bootslot.booted["version"]))

    async def confirm_task(app):
        import asyncio

        c = Confirmer(app.held.get("upd_confirm_s", 60) * 1000)
        while not c.done:
            now = app.hal.ticks_ms()
            if c.step(now, app.supervisor.state, app.flash_held()):
                app.journal.add(now, "update", "", "CONFIRMED", "version %s" % (
                    bootslot.booted["version"],))
            await asyncio.sleep_ms(200)

    return confirm_task
