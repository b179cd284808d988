"""The Modbus TCP server of ``v2g-daemon``: pymodbus's server over the mirrored image.

Shape (pymodbus ``examples/server_updating.py``, on the 3.16 ``SimDevice`` API): the
``Gateway`` keeps one array of words, ``words`` (index = protocol address), and
``refresh()`` rewrites it from the newest register image; a read calls it first when a
newer image has arrived (``refresh_if_behind``), so what a client reads is as old as the
newest image, not as old as the updater's last pass. The updater task in the daemon runs
every ``UPDATE_S`` for the controls and refreshes the words only when nobody read them for
``IDLE_REFRESH_S`` (a refresh encodes the whole map, ~1.4 ms: at 20 Hz that was most of an
idle daemon's CPU); a read encodes only the points it reads. The server only reads: its
device ``action`` copies the requested words from ``words`` into pymodbus's register list
on every read, so a read never sees a half-written image (the updater and the server share
one event loop).

Writes (functions 6, 16, 22, 23) come to ``Gateway.write`` and are applied only when all
hold, else refused with the exception code in brackets, counted (``writes_refused``,
status register 50) and logged (at most one line a second, then a count):
1. writes enabled in the config [01], the client's address in ``modbus.writes.allow``
   [01], the connection unlocked by the token in the unlock register (address 100) less
   than ``unlock_s`` ago [01];
2. every word written belongs to a writable point, each point written whole [02] (the
   status block, 40001 included, and every SunSpec point without a setting is read-only);
3. the link up and the image fresh [04];
4. each value inside the parameter table's range and resolution, or the control's range;
   the whole config set valid (``params.validate``) [03];
5. the board answers OK [03 when it refuses, 04 when it does not answer in ``CMD_TIMEOUT_S``].
Coils and discrete inputs (functions 1, 2, 5, 15) are not served [01]; unmapped
addresses [02].

The session register (120) becomes a SESSION command: 0 stop (the board ceases power and
opens its DC contactors), 1 start.

704 controls become setpoints: the daemon keeps the power others command (the image's
setpoint when its id is not one the daemon sent), applies WSet/VarSet and the WMaxLimPct
limit (of ``p_rated_w``, both directions), and sends a SETPOINT with a new id only when
that result differs from the power in force and no send of the same value is pending, so a
repeated write (same value) sends nothing. 705-710 points become CONFIG changes (held
integers by parameter id), sent only when a value changes.

Context: host (daemon event loop).
"""

import asyncio
import contextvars
import hmac
import logging
import time

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from v2g.gateway import regmap
from v2g.gateway.regmap import CONTROL_DEFAULTS, P

log = logging.getLogger("v2g.gateway")

UPDATE_S = 0.05  # updater period (a read refreshes first when a newer image is in)
IDLE_REFRESH_S = 1.0  # the updater refreshes words older than this (reads refresh anyway)
FRESH_S = 0.002  # a read refreshes the words when they are older than this
CMD_TIMEOUT_S = 2.0  # a command's RESULT from the board
PENDING_S = 1.0  # a setpoint sent this recently and not yet in the image is pending
WRITE_FCS = (5, 6, 15, 16, 22, 23)
_CONN = contextvars.ContextVar("modbus_connection", default=None)


class Refused(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Gateway:
    """The daemon's model of the device: config, link peer, 704 controls, parameter view,
    counters, and the word array the server reads."""

    def __init__(self, cfg, peer=None, clock=time.monotonic):
        self.cfg = cfg
        self.peer = peer
        self.clock = clock
        self.map = regmap.build()
        self.params = P.defaults()  # the board's config as far as the daemon knows it
        self.controls = dict(CONTROL_DEFAULTS)
        self.words = [0] * self.map.sunspec_end
        self.counters = dict.fromkeys(("reads", "writes_ok", "writes_refused",
                                       "writes_unchanged", "setpoints", "configs"), 0)
        self.base = None  # (p_w, q_var) others command (firmware signs)
        self.ours = []  # setpoint ids this daemon sent (newest last, at most 64)
        self.sent = None  # (id, p, q, at)
        self._images = -1
        self._image_at = None
        self._refreshed = (None, 0.0)  # (peer.images, clock) of the last refresh
        self._cmd_lock = None
        self._log_at = 0.0
        self._log_suppressed = 0
        self.refresh()

    # ---- the image side ----

    def link_info(self):
        peer, now = self.peer, self.clock()
        if peer is not None and peer.images != self._images:
            self._images = peer.images
            self._image_at = getattr(peer, "image_at", None) or now  # its arrival
        age = None if self._image_at is None else max(0.0, now - self._image_at)
        state = 0
        if peer is not None and peer.version:
            state = 3 if peer.state == "LOST" else 1
            im = peer.image
            if state == 1 and im and im["flags"] & 0x08:
                state = 2
        c = peer.counters if peer is not None else {}
        return {"state": state, "age_ms": 65535 if age is None else min(65535, int(age * 1000)),
                "age_s": age, "crc_errors": c.get("crc_errors", 0), "lost": c.get("lost", 0),
                "retransmissions": c.get("retransmissions", 0)}

    def stale(self, info=None):
        info = info or self.link_info()
        return (info["state"] not in (1, 2) or info["age_s"] is None
                or info["age_s"] > self.cfg.modbus_stale_s
                or self.peer is None or self.peer.image is None)

    def snap(self):
        info = self.link_info()
        hello = (self.peer.hello or {}) if self.peer is not None else {}
        return regmap.Snap(image=self.peer.image if self.peer is not None else None,
                           params=self.params, controls=self.controls,
                           stale=self.stale(info), link=info, fw=hello.get("tail", ""),
                           serial=self.cfg.device_serial,
                           refused=self.counters["writes_refused"])

    def refresh(self):
        """Rewrite ``words`` from the newest image (the only writer of the datastore)."""
        self._refreshed = (self.peer.images if self.peer is not None else None, self.clock())
        self.map.encode(self.snap(), self.words)

    def refresh_if_behind(self, address, count):
        """Before a read of ``count`` words at ``address``: encode the points it reads
        when a newer image arrived or the words (their image age included) are older than
        FRESH_S, so a client reads the image of this instant, not the updater's last pass.
        Only the points read: the whole map took ~3 ms, most of a daemon's CPU under a
        10 Hz poll."""
        images, at = self._refreshed
        peer = self.peer
        if (peer is not None and peer.images != images) or self.clock() - at > FRESH_S:
            self.map.encode(self.snap(), self.words, address, address + count)

    # ---- the pymodbus side ----

    def device(self):
        """The pymodbus ``SimDevice``: every mapped region, this gateway as its action.
        Id 0: the server answers any unit id (SunSpec clients use 1, some 0 or 126)."""
        simdata = [SimData(a, values=self.words[a:a + n], datatype=DataType.REGISTERS)
                   for a, n in self.map.regions()]
        return SimDevice(0, simdata=simdata, action=self.action)

    async def action(self, fc, start, address, count, registers, values):
        """pymodbus calls this for every request on a mapped range (see SimDevice)."""
        if values is None:
            if fc in (1, 2, 5, 15):  # coils and discrete inputs: not served
                return ExcCodes.ILLEGAL_FUNCTION
            # 3, 4; and 6, 16, 22, 23 read back what they wrote
            self.counters["reads"] += 1
            self.refresh_if_behind(address, count)
            o = address - start
            registers[o:o + count] = self.words[address:address + count]
            return None
        conn = _CONN.get()
        try:
            await self.write(conn, fc, address, list(values))
        except Refused as e:
            if conn is not None:
                conn.refusal = e.reason
            return e.code
        # the server stores the written words; reads copy ``words`` again, so what a
        # client reads back is what the board (or the daemon) holds
        self.counters["writes_ok"] += 1
        if address == regmap.UNLOCK_ADDR:
            values[:] = [0] * len(values)  # the token never stays in a register
        return None

    def refused(self, conn, exc_code):
        """One refused write (called for every exception answer to a write function)."""
        self.counters["writes_refused"] += 1
        reason = getattr(conn, "refusal", None) or "unmapped address"
        conn.refusal = None
        now = self.clock()
        if now - self._log_at >= 1.0:
            more = (" (+%d more refused since the last line)" % self._log_suppressed
                    if self._log_suppressed else "")
            log.warning("modbus: write from %s refused (exception %02d): %s%s",
                        conn.peer_host(), exc_code, reason, more)
            self._log_at = now
            self._log_suppressed = 0
        else:
            self._log_suppressed += 1
        self.refresh_counter()

    def refresh_counter(self):
        r = self.map.by_name["status.writes_refused"]
        self.words[r.addr:r.addr + 2] = regmap.encode_value(r, self.counters["writes_refused"])

    # ---- writes ----

    async def write(self, conn, fc, address, values):
        w = self.cfg.writes
        if fc not in (6, 16, 22, 23):
            raise Refused(ExcCodes.ILLEGAL_FUNCTION, "function %d not served" % fc)
        if not w.enabled:
            raise Refused(ExcCodes.ILLEGAL_FUNCTION, "writes disabled (modbus.writes.enabled)")
        host = conn.peer_host() if conn is not None else ""
        if not w.allows(host):
            raise Refused(ExcCodes.ILLEGAL_FUNCTION,
                          "client %s not in modbus.writes.allow" % host)
        now = self.clock()
        if address == regmap.UNLOCK_ADDR:
            raw = b"".join(v.to_bytes(2, "big") for v in values).rstrip(b"\0")
            if not hmac.compare_digest(raw, w.unlock_token.encode()):
                conn.unlocked_until = 0.0
                raise Refused(ExcCodes.ILLEGAL_VALUE, "wrong unlock token")
            conn.unlocked_until = now + w.unlock_s
            log.info("modbus: writes unlocked for %s for %.0f s", host, w.unlock_s)
            return
        if conn is None or getattr(conn, "unlocked_until", 0.0) <= now:
            raise Refused(ExcCodes.ILLEGAL_FUNCTION,
                          "locked: write the unlock token to register %d first"
                          % regmap.UNLOCK_ADDR)
        regs = self.map.covering(address, len(values))
        if regs is None:
            raise Refused(ExcCodes.ILLEGAL_ADDRESS, "address %d+%d: not whole points"
                          % (address, len(values)))
        ro = [r.name for r in regs if r.setting is None or r.setting.kind == "unlock"]
        if ro:
            raise Refused(ExcCodes.ILLEGAL_ADDRESS, "read-only: %s" % ", ".join(ro[:4]))
        if self.stale():
            raise Refused(ExcCodes.DEVICE_FAILURE, "link down or image stale")
        snap = self.snap()
        cfg_numbers, controls, k, session = {}, {}, 0, None
        for r in regs:
            raw = regmap.decode_words(r, values[k:k + r.size])
            k += r.size
            s = r.setting
            if s.kind == "control":
                lo, hi = s.limits(snap)
                if not lo <= raw <= hi:
                    raise Refused(ExcCodes.ILLEGAL_VALUE, "%s: value %d outside %d..%d"
                                  % (r.name, raw, lo, hi))
                controls[s.target] = raw
            elif s.kind == "session":
                if raw not in (0, 1):
                    raise Refused(ExcCodes.ILLEGAL_VALUE, "session: value %d, allowed 0 (stop) "
                                  "or 1 (start)" % raw)
                session = raw
            else:
                cfg_numbers[s.target] = self._param_value(r, raw, snap)
        async with self._lock():
            if cfg_numbers:
                await self._apply_config(cfg_numbers)
            if controls:
                await self._apply_controls(controls)
            if session is not None:
                await self._apply_session(session)
        self.refresh()

    def _param_value(self, r, raw, snap):
        row = P.row(r.setting.target)
        value = r.setting.to_param(raw, snap)
        held = P.to_int(row, value)
        lo, hi = P.to_int(row, row[P.MIN]), P.to_int(row, row[P.MAX])
        if not lo <= held <= hi:
            raise Refused(ExcCodes.ILLEGAL_VALUE, "%s: value %d is %s = %r, outside %s"
                          % (r.name, raw, row[P.NAME], value, P.describe_range(row)))
        shown = dict(snap.params)
        shown[row[P.NAME]] = held
        back = r.get(regmap.Snap(params=shown))
        if back != raw:
            raise Refused(ExcCodes.ILLEGAL_VALUE, "%s: value %d is not a step of %s "
                          "(resolution 10^-%d %s; nearest %s)" % (
                              r.name, raw, row[P.NAME], row[P.DECIMALS], row[P.UNIT], back))
        return P.to_number(row, held)

    def _lock(self):
        if self._cmd_lock is None:
            self._cmd_lock = asyncio.Lock()
        return self._cmd_lock

    async def _apply_config(self, numbers):
        held, errors = P.validate(numbers, base=self.params)
        if errors:
            raise Refused(ExcCodes.ILLEGAL_VALUE, "; ".join(errors))
        changed = {P.row(n)[P.PID]: held[n] for n in numbers if held[n] != self.params[n]}
        if not changed:
            self.counters["writes_unchanged"] += 1
            return
        res = await self._command(self.peer.config(changed, timeout=CMD_TIMEOUT_S), "config")
        if not res.ok:
            raise Refused(ExcCodes.ILLEGAL_VALUE, "board refused config: %s %s"
                          % (res.status, res.detail))
        self.counters["configs"] += 1
        for n in numbers:
            self.params[n] = held[n]
        log.info("modbus: config %s applied", {n: numbers[n] for n in numbers})

    async def _apply_controls(self, controls):
        before = dict(self.controls)
        self.controls.update(controls)
        try:
            sent = await self.reconcile()
        except Refused:
            self.controls = before
            raise
        if not sent:
            self.counters["writes_unchanged"] += 1

    async def _apply_session(self, start):
        """SESSION over the link (stop: the board ceases power and opens the contactors)."""
        self.session_id = (getattr(self, "session_id", 0) + 1) & 0xFFFFFFFF
        res = await self._command(self.peer.session(bool(start), self.session_id,
                                                    timeout=CMD_TIMEOUT_S), "session")
        if not res.ok:
            raise Refused(ExcCodes.ILLEGAL_VALUE, "board refused session %s: %s %s"
                          % ("start" if start else "stop", res.status, res.detail))
        self.controls["session"] = start
        log.info("link: session %s (id %d)", "start" if start else "stop", self.session_id)

    async def _command(self, coro, what):
        try:
            return await coro
        except (asyncio.TimeoutError, ConnectionError) as e:
            raise Refused(ExcCodes.DEVICE_FAILURE, "%s: no answer from the board (%s)"
                          % (what, e or "timeout")) from None

    def wanted(self):
        """The (p_w, q_var) the controls ask for, or None before any image."""
        im = self.peer.image if self.peer is not None else None
        if im is not None and im["setpoint_id"] not in self.ours:
            self.base = (im["p_cmd_w"], im["q_cmd_var"])
        if self.base is None:
            return None
        p, q = self.base
        c = self.controls
        if c["WSetEna"]:
            p = -c["WSet"]  # SunSpec: generation positive; firmware: charging positive
        if c["VarSetEna"]:
            q = -c["VarSet"]
        if c["WMaxLimPctEna"]:
            lim = c["WMaxLimPct"] * P.to_number(P.row("p_rated_w"), self.params["p_rated_w"])
            lim /= 100
            p = max(-lim, min(lim, p))
        return int(round(p)), int(round(q))

    async def reconcile(self):
        """Send a setpoint when the controls ask for a power not in force; True if sent."""
        want = self.wanted()
        im = self.peer.image if self.peer is not None else None
        if want is None or im is None:
            return False
        now = self.clock()
        if self.sent is not None and self.sent[1:3] == want:
            pending = im["setpoint_id"] != self.sent[0] and now - self.sent[3] < PENDING_S
            if pending or im["setpoint_id"] == self.sent[0]:
                return False
        if (im["p_cmd_w"], im["q_cmd_var"]) == want:
            return False
        sp_id = (max(self.ours[-1:] + [im["setpoint_id"]]) + 1) & 0xFFFFFFFF or 1
        self.ours = (self.ours + [sp_id])[-64:]
        self.sent = (sp_id, want[0], want[1], now)
        res = await self._command(self.peer.setpoint(sp_id, want[0], want[1],
                                                     timeout=CMD_TIMEOUT_S), "setpoint")
        if res.status not in ("OK", "DUPLICATE"):
            raise Refused(ExcCodes.ILLEGAL_VALUE, "board refused setpoint %d (%d W, %d var):"
                          " %s %s" % (sp_id, want[0], want[1], res.status, res.detail))
        self.counters["setpoints"] += 1
        log.info("link: setpoint %d: %d W, %d var (%s)", sp_id, want[0], want[1], res.status)
        return True

    async def background(self):
        """One updater step: refresh the words; re-apply the controls when others changed
        the power (e.g. the limit stays in force over a new external setpoint)."""
        if self.clock() - self._refreshed[1] > IDLE_REFRESH_S:
            self.refresh()
        c = self.controls
        if (c["WMaxLimPctEna"] or c["WSetEna"] or c["VarSetEna"]) and not self.stale():
            lock = self._lock()
            if not lock.locked():
                async with lock:
                    try:
                        await self.reconcile()
                    except Refused as e:
                        log.warning("link: %s", e.reason)


class _Handler(ServerRequestHandler):
    """One client connection: its address, unlock deadline and the refusal reason."""

    refusal = None
    unlocked_until = 0.0

    def peer_host(self):
        try:
            return self.transport.get_extra_info("peername")[0]
        except (AttributeError, TypeError, IndexError):
            return "?"

    async def handle_request(self):
        _CONN.set(self)
        await super().handle_request()

    def pdu_send(self, pdu, addr=None):
        if isinstance(pdu, ExceptionResponse) and (pdu.function_code & 0x7F) in WRITE_FCS:
            self.server.gateway.refused(self, pdu.exception_code)
        super().pdu_send(pdu, addr)


class GatewayServer(ModbusTcpServer):
    """pymodbus's TCP server with per-connection handlers that know their client."""

    def __init__(self, gateway, host, port):
        self.gateway = gateway
        super().__init__(gateway.device(), address=(host, port))

    def callback_new_connection(self):
        return _Handler(self, self.trace_packet, self.trace_pdu, self.trace_connect)
