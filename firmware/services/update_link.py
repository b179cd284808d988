"""Signed updates over the link: the handler of SERVICE group 1 (docs/update.md).

A board in production mode has no REPL; this is how it takes an update. The host
(``v2g update BUNDLE --link PORT``) drives it with ``SERVICE_REQ(1, command, data)``;
every request gets one ``SERVICE_RSP(1, command, status, data)``:

    STATE   ()                 -> OK, JSON: board, running slot/state/version/counter,
                                  floor, key present, staged slot, job, free flash bytes
    META    (u32 offset, bytes) -> OK: the bundle's metadata (header, manifest, digest,
                                  signature) into ``upd.meta``, in order from offset 0
    BEGIN   ()                 -> OK: starts ``update.begin_steps`` (digest, Ed25519
                                  signature, board, counter, arch; prepares the inactive
                                  slot, keeps every file it has with the same SHA-256)
    POLL    ()                 -> WORKING while a job runs; then OK and the job's
                                  VerifyResult as JSON (ok, code, name, reason, slot, same,
                                  kept, need_count, need_bytes)
    NEED    (u16 first)        -> OK, a bitmap of the manifest's files from ``first`` on:
                                  bit i of byte j set = file first+8j+i must be sent
    WRITE   (u16 file, u32 offset, bytes) -> OK: a chunk of a needed file, into the
                                  staged slot, in order from offset 0
    COMMIT  ()                 -> OK: starts ``update.commit_steps`` (the slot verified
                                  again from its own copy, every file's size and SHA-256,
                                  then the pointer switch, in trial); POLL for the result
    REBOOT  ()                 -> OK; the board resets ``REBOOT_DELAY_MS`` later (the
                                  answer goes out first)
    CONFIG_WRITE (u32 offset, bytes) -> OK: a signed config (``v2g sign-config``) into
                                  ``config.signed.tmp``, in order from offset 0
    CONFIG_CHECK ()            -> OK: starts the check of ``lockdown.check_signed_steps``
                                  (signature, board, counter above the last used); valid:
                                  renamed to ``config.signed``, which the next boot applies
                                  (REBOOT); POLL for the result

Status: ``OK`` 0, ``REJECTED`` 1 (with the reason as text: nothing changed by this
request), ``MALFORMED`` 3, ``UNSUPPORTED`` 4 (unknown command), ``WORKING`` 6 (POLL: the
job still runs). A refusal of the bundle itself is a job result with ``ok`` false.

What may be written: ``upd.meta`` and, after a BEGIN that succeeded, the files the
manifest names and the board lacks, inside the slot ``update.begin`` prepared: a file
index, never a path, so a request cannot reach the running tree, the key or the pointer.
Whatever arrives is verified at COMMIT (signature, every hash) before the pointer moves.

Flash writes: refused while ``app.flash_held()`` (energized on a ``flash_stalls_tick``
board: a write would stall the tick), as CONFIG over the link is; ``update.begin`` itself
refuses while the converter is energized on any board. A running job stops with ``BUSY``
when the converter becomes energized on such a board. REBOOT is refused while energized.

Long work never blocks the loop: BEGIN, COMMIT and CONFIG_CHECK run step generators
(``update``'s, ``lockdown``'s) in an asyncio task that yields after every step (within
the signature check every 16 bits of its scalar loop; while hashing every 4 KB), so the
supervisor and the watchdog feed run in between; ``step_max_us`` (in STATE) is the
longest step measured with the HAL's clock (on the simulated board that is simulated
time, which stands still during a step: there it reads ~0). Nothing here runs in the
tick.

RAM: the service object, one open file, a 1 KB buffer during a job; the manifest's names
while an update is staged (~4 KB for a 36-file tree).
Context: services (the link's task and its own asyncio tasks); never the tick. The
constants at the top are what the host reads (``v2g.link.service`` loads this file):
nothing above ``UpdateService`` imports anything.
"""

GROUP = 1

STATE = 1
META = 2
BEGIN = 3
POLL = 4
NEED = 5
WRITE = 6
COMMIT = 7
REBOOT = 8
CONFIG_WRITE = 9
CONFIG_CHECK = 10
COMMANDS = ("", "STATE", "META", "BEGIN", "POLL", "NEED", "WRITE", "COMMIT", "REBOOT",
            "CONFIG_WRITE", "CONFIG_CHECK")

OK = 0
REJECTED = 1
MALFORMED = 3
UNSUPPORTED = 4
WORKING = 6

META_FMT = "<I"  # offset
NEED_FMT = "<H"  # first file index
WRITE_FMT = "<HI"  # file index in the manifest, offset
REBOOT_DELAY_MS = 300
REASON_MAX = 300  # characters of a refusal reason in a POLL answer
CONFIG_MAX = 4096  # bytes of a signed config (what lockdown.apply reads)
CONFIG_TMP = "config.signed.tmp"


class UpdateService:
    """Group 1 of SERVICE_REQ for one ``App``; ``on_service`` is called in the link's task."""

    def __init__(self, app, inline=False):
        """``inline``: jobs (BEGIN, COMMIT, CONFIG_CHECK) run to their end inside the
        request (CPython tests, no event loop); the board runs them as asyncio tasks."""
        self.app = app
        self.inline = inline
        self.root = app.root
        self.job = None  # name of the running job ("BEGIN", "COMMIT") or None
        self.result = None  # the last job's result dict
        self.files = None  # manifest names after a BEGIN that succeeded
        self.need = None  # their indices the board lacks
        self.slot_dir = None
        self.meta_len = 0
        self.config_len = 0
        self.f = None  # the file being written: handle, index, next offset
        self.f_idx = -1
        self.f_off = 0
        self.step_max_us = 0
        self.rebooting = False

    # ---- requests ----

    def on_service(self, now_ms, command, data):
        """``(status, bytes or text)`` for one request; never raises on bad data."""
        import struct

        if command == STATE:
            return OK, self._state()
        if command == POLL:
            if self.job:
                return WORKING, self.job
            if self.result is None:
                return REJECTED, "no job has run (BEGIN or COMMIT first)"
            return OK, self._result_json()
        if command not in (META, BEGIN, NEED, WRITE, COMMIT, REBOOT, CONFIG_WRITE,
                           CONFIG_CHECK):
            return UNSUPPORTED, "update command %d unknown" % command
        if self.job:
            return REJECTED, "busy: %s runs; POLL until it ends" % self.job
        if command == REBOOT:
            return self._reboot()
        if command == NEED:
            if len(data) != 2:
                return MALFORMED, "NEED takes a u16 file index"
            return self._need(struct.unpack_from(NEED_FMT, data, 0)[0])
        if self.app.flash_held():
            return REJECTED, ("not written while energized: a flash write stalls the tick on "
                              "this board (flash_stalls_tick); update it de-energized")
        if command == META:
            if len(data) < 4:
                return MALFORMED, "META takes a u32 offset and bytes"
            return self._meta(struct.unpack_from(META_FMT, data, 0)[0], data[4:])
        if command == WRITE:
            if len(data) < 6:
                return MALFORMED, "WRITE takes a u16 file index, a u32 offset and bytes"
            idx, off = struct.unpack_from(WRITE_FMT, data, 0)
            return self._write(idx, off, data[6:])
        if command == CONFIG_WRITE:
            if len(data) < 4:
                return MALFORMED, "CONFIG_WRITE takes a u32 offset and bytes"
            return self._config_write(struct.unpack_from(META_FMT, data, 0)[0], data[4:])
        if command == CONFIG_CHECK:
            if not self.config_len:
                return REJECTED, "no signed config written (CONFIG_WRITE first)"
            out = [None]
            return self._start("CONFIG_CHECK", self._config_steps(out), out)
        if command == BEGIN:
            from services import update

            self._close()
            self.files = self.need = self.slot_dir = None
            out = [None]
            return self._start("BEGIN", update.begin_steps(self.root, None, None, out), out)
        # COMMIT
        from services import update

        if self.files is None:
            return REJECTED, "nothing staged (META and BEGIN first)"
        self._close()
        out = [None]
        return self._start("COMMIT", update.commit_steps(self.root, None, out), out)

    def _state(self):
        import json

        import bootslot

        from services import update

        st = update.status(self.root)
        b = st["booted"] or {}
        p = st["pointer"] or {}
        return json.dumps({
            "board": st["board"], "slot": b.get("slot"), "state": b.get("state"),
            "version": b.get("version"), "counter": p.get("counter"),
            "pointer_state": p.get("state"), "pointer_slot": p.get("active"),
            "floor": st["floor"], "key": st["key"], "job": self.job,
            "staged": self.slot_dir is not None, "free": _free(self.root or "."),
            "step_max_us": self.step_max_us, "rebooting": self.rebooting,
            "notes": "; ".join(b.get("notes") or ())[:200], "trial": bootslot.in_trial(),
            "locked": bool(getattr(self.app, "locked", False))})

    def _result_json(self):
        import json

        r = self.result
        need = r.get("need") or ()
        return json.dumps({
            "job": r.get("job"), "ok": r["ok"], "code": r["code"], "name": r["name"],
            "reason": r["reason"][:REASON_MAX], "slot": r.get("slot"),
            "same": r.get("same", False), "kept": r.get("kept", 0),
            "version": r.get("version"), "need_count": len(need),
            "need_bytes": sum(e[1] for e in need)})

    def _meta(self, off, chunk):
        import bootslot

        from services import update

        if off and off != self.meta_len:
            return REJECTED, "META offset %d, expected %d" % (off, self.meta_len)
        if off + len(chunk) > bootslot.HEADER + bootslot.MAX_MANIFEST + 96:
            return REJECTED, "metadata longer than %d bytes" % (
                bootslot.HEADER + bootslot.MAX_MANIFEST + 96)
        self._close()
        self.files = self.need = self.slot_dir = None  # a new bundle: BEGIN again
        try:
            with open(self.root + update.META, "wb" if off == 0 else "ab") as f:
                f.write(chunk)
        except OSError as e:
            return REJECTED, "flash write failed: %s" % e
        self.meta_len = off + len(chunk)
        return OK, b""

    def _config_write(self, off, chunk):
        if off and off != self.config_len:
            return REJECTED, "CONFIG_WRITE offset %d, expected %d" % (off, self.config_len)
        if off + len(chunk) > CONFIG_MAX:
            return REJECTED, "signed config longer than %d bytes" % CONFIG_MAX
        try:
            with open(self.root + CONFIG_TMP, "wb" if off == 0 else "ab") as f:
                f.write(chunk)
        except OSError as e:
            return REJECTED, "flash write failed: %s" % e
        self.config_len = off + len(chunk)
        return OK, b""

    def _config_steps(self, out):
        """Check the signed config written; valid: it becomes ``config.signed`` (applied
        and removed by ``lockdown.apply`` at the next boot)."""
        import os

        from services import lockdown, update

        self.config_len = 0
        tmp = self.root + CONFIG_TMP
        try:
            with open(tmp, "rb") as f:
                text = f.read(CONFIG_MAX)
        except OSError as e:
            out[0] = update._r(update.V_IO, "cannot read the signed config: %s" % e)
            return
        co = [None]
        yield from lockdown.check_signed_steps(self.root, text, update.board_name(self.root),
                                               lockdown.last_counter(self.root), co)
        why = co[0][2]
        if why:
            os.remove(tmp)
            out[0] = update._r(update.V_SIGNATURE if "signature" in why else update.V_FORMAT,
                               why)
            return
        os.rename(tmp, self.root + lockdown.SIGNED)
        out[0] = update._r(update.V_OK, "signed config counter %d stored; the next boot "
                                        "applies it" % co[0][1])

    def _need(self, first):
        if self.need is None:
            return REJECTED, "nothing staged (META and BEGIN first)"
        n = len(self.files)
        nbytes = min((n - first + 7) // 8, 470) if first < n else 0
        out = bytearray(nbytes)
        for i in self.need:
            j = i - first
            if 0 <= j < 8 * nbytes:
                out[j >> 3] |= 1 << (j & 7)
        return OK, bytes(out)

    def _write(self, idx, off, chunk):
        if self.need is None:
            return REJECTED, "nothing staged (META and BEGIN first)"
        if idx not in self.need:
            return REJECTED, "file %d is not one the board needs" % idx
        try:
            if off == 0:
                self._close()
                self.f = open(self.slot_dir + self.files[idx], "wb")
                self.f_idx = idx
                self.f_off = 0
            elif idx != self.f_idx or off != self.f_off:
                return REJECTED, "file %d offset %d, expected file %d offset %d" % (
                    idx, off, self.f_idx, self.f_off)
            self.f.write(chunk)
        except OSError as e:
            self._close()
            return REJECTED, "flash write failed: %s" % e
        self.f_off += len(chunk)
        return OK, b""

    def _close(self):
        if self.f is not None:
            try:
                self.f.close()
            except OSError:
                pass
            self.f = None
            self.f_idx = -1

    def _reboot(self):
        import asyncio

        if self.app.supervisor.state in ("ENERGIZED", "DERATED"):
            return REJECTED, "not restarted while energized: stop the session first"
        self._close()
        self.rebooting = True
        asyncio.create_task(self._reset_later())
        return OK, b""

    async def _reset_later(self):
        import asyncio

        await asyncio.sleep_ms(REBOOT_DELAY_MS)
        self.app.hal.pwm_off()
        self.app.hal.contactor(0, 0)
        import machine

        machine.reset()

    # ---- jobs ----

    def _start(self, name, steps, out):
        import asyncio

        self.job = name
        self.result = None
        if self.inline:
            self.run_job(steps, out, name)
        else:
            asyncio.create_task(self._drive(name, steps, out))
        return OK, b""

    def run_job(self, steps, out, name="job"):
        """Run a job to its end without asyncio (tests, tools); returns its result."""
        self.job = name
        for _ in self._steps(name, steps, out):
            pass
        return self.result

    async def _drive(self, name, steps, out):
        import asyncio

        for _ in self._steps(name, steps, out):
            await asyncio.sleep_ms(0)

    def _steps(self, name, steps, out):
        """One step of ``steps`` per iteration, timed; sets ``result`` at the end."""
        from services import update

        hal = self.app.hal
        res = None
        try:
            while True:
                if self.app.flash_held():
                    steps.close()
                    res = update._r(update.V_BUSY, "the converter became energized during %s; "
                                    "nothing switched, try again de-energized" % name)
                    break
                t0 = hal.ticks_us()
                try:
                    next(steps)
                except StopIteration:
                    res = out[0]
                    break
                finally:
                    dt = hal.ticks_diff(hal.ticks_us(), t0)
                    if dt > self.step_max_us:
                        self.step_max_us = dt
                yield
        except Exception as e:  # a flash error: refused, the pointer not moved
            res = update._r(update.V_IO, "%s failed: %r" % (name, e))
        if res is None:
            res = update._r(update.V_IO, "%s ended without a result" % name)
        res["job"] = name
        if name == "BEGIN" and res["ok"] and not res.get("same"):
            self._staged(res)
        elif name == "COMMIT" and res["ok"]:
            self.files = self.need = self.slot_dir = None  # the slot is the trial's now
        self.result = res
        self.job = None

    def _staged(self, res):
        import bootslot

        from services import update

        try:
            with open(self.root + update.META, "rb") as f:
                m = bootslot.parse_meta(f.read())[0]
        except (OSError, ValueError):
            return
        self.files = [e[0] for e in m["files"]]
        want = set(e[0] for e in res["need"])
        self.need = set(i for i, n in enumerate(self.files) if n in want)
        self.slot_dir = res["dir"]


def _free(path):
    """Free bytes of the filesystem holding ``path``, or None where unknown."""
    import os

    try:
        st = os.statvfs(path)
    except (AttributeError, OSError):
        return None
    return st[0] * st[4]
