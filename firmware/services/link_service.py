"""The link wired to the controller: ``services.link`` speaking for the running ``App``.

``tasks(app)`` is what ``App.run`` starts: when the board has a link UART (board data key
``"link"`` and a stream from ``hal.link_stream()``, or ``machine.UART`` from the data), it
builds the session with the parameter table's ``link_*`` values, arms the supervisor's
link gate (state DOWN: a board that never hears the daemon never closes its contactors
and never exports) and returns one task maker; a board without a link gets ``()`` and
runs exactly as before.

What each message does (``Wiring``, the link's handlers):
- SETPOINT -> ``Supervisor.command_setpoint`` under the id ``"L<id>"`` (the supervisor's
  id space, apart from scenario ids): a re-sent or restarted daemon's id already seen is
  DUPLICATE and changes nothing; outside +/- rated is REJECTED;
- CONFIG -> ``params.validate`` on top of the config in force, then the board's own
  check (``app.board_errors``), then ``config_store.save`` (config.json and the last good
  copy, each written atomically); any error: REJECTED naming every problem, nothing
  written. A stored config applies at the next restart (as ``v2g config push``);
- EV_LIMITS -> ``Supervisor.set_ev_limits`` (what the scenario event ``ev_limits`` sets);
- SESSION -> ``Supervisor.session``: stop ceases power and opens the DC contactors
  through the contactor supervision (a weld shows STUCK within 1 s);
- EV_SOC (link version 4) -> ``EnergyJournal.set_soc``: the car's SoC in permille
  (0xFFFF unknown) for the interval records' start/end SoC; above 1000: REJECTED;
- link state changes -> ``Supervisor.set_link_state`` (LOST: cease, then open; DEGRADED:
  fault V2G-502, power ceased until the loss is under the threshold again);
- REGISTER_IMAGE <- supervisor state every ``link_image_ms`` (default: every supervisor
  period): state, contactor code, flags (PLL lock, permit, ceased, link degraded / lost),
  f, phase voltage extremes, DC link, commands in force, setpoint id, module temperature,
  energy in and out (the supervisor's ``meter``: whole Wh of its mWh totals), EV limits, fault
  count and newest fault code, tick count and overruns; since link version 2 also the
  measured P and Q (the tick's dq measurement, not the commands), per-phase fundamental
  RMS voltages (``grid_measure``), the RMS phase current (positive sequence: the tick
  measures no per-phase current magnitude), PF, tick cost (last, max, period) and the
  board's link state and counters (CRC errors, lost frames, heartbeat gaps).
Link counters (frames, CRC errors, retransmissions, losses, heartbeat gaps) are
``app.link.counters_dict()``; ``v2g status`` shows them.

Clock: the session gets an unwrapped millisecond count built from ``hal.ticks_ms`` (which
wraps at 2**30), so its timeouts never see a wrap.

Cost (measured with ``gc.mem_alloc`` on the 64-bit unix runtime by tests_host/link/
test_link_service.py, which prints the figures): RAM held 5856 bytes (the session and its
buffers 5152, this wiring, its clock and the image scratch buffer the rest; less on a
32-bit board), plus the task's 128-byte read buffer; CPU ~19 us per register image built
and sent on the x64 host. The image is packed straight into the link's transmit buffer
(``pack_image``: one ``struct.pack_into`` of plain arguments, integer maths): ~160 bytes
allocated per image (the module temperature's float, the frame's memoryview slices),
16 KB/s at the default 10 ms period; the v1 image built a values tuple with float maths
and allocated ~860 bytes per image (~86 KB/s) for 66 bytes of payload, v5 carries 101.
Nothing here runs in the tick or touches the tick's hardware; a command reaches the
controller only through the supervisor's methods.
Context: services (asyncio task beside the supervisor); never the tick.
"""

import struct

import config_store
import current
import grid_measure
import params
import pll
import tick
from services import link
from services import link_msgs as lm

_MASK = 0x3FFFFFFF  # ticks_ms wraps at 2**30 on MicroPython ports and the sim HAL
_IO_ERRORS = (OSError,)


class Clock:
    """Unwrapped ms from a ``ticks_ms`` that wraps at 2**30."""

    def __init__(self, ticks_ms):
        self.ticks_ms = ticks_ms
        self.last = ticks_ms()
        self.ms = 0

    def __call__(self):
        now = self.ticks_ms()
        self.ms += (now - self.last) & _MASK
        self.last = now
        return self.ms


class Writer:
    """``write(mv)`` for the link over a non-blocking stream: a frame the stream takes
    only in part (or not at all) is dropped, counted, and the next write starts with a
    0x00 so the peer resynchronises at once."""

    def __init__(self, stream):
        self.stream = stream
        self.resync = False
        self.dropped = 0

    def __call__(self, mv):
        s = self.stream
        try:
            if self.resync:
                if not s.write(b"\x00"):
                    self.dropped += 1
                    return
                self.resync = False
            n = s.write(mv)
        except _IO_ERRORS:
            n = 0
        if n is None or n < len(mv):
            self.dropped += 1
            self.resync = True


def _clamp(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


class Wiring(link.Handlers):
    """The link's handlers over one ``App``; all called in the link's task."""

    def __init__(self, app):
        self.app = app
        self.sup = app.supervisor
        self.link = None
        self.last_id = None  # link id of the newest accepted setpoint, and its key
        self.last_key = None
        self.fault_count = 0
        self.last_fault = b""
        held = app.held
        self.rated = held["p_rated_w"]
        self.v_nom_dv = held["v_nom_ln_rms"]  # held in 0.1 V
        self.v_base_mv = params.v_peak_mv(held)
        # RMS phase current at 1 pu of the dq current: rated / (3 V_nom), in 0.01 A
        self.i_base_ca = self.rated * 1000 // (3 * self.v_nom_dv)
        self.gm = getattr(app.ctl, "gm", None)
        self.fmt = lm.BY_ID[lm.REGISTER_IMAGE][lm.FMT]
        self.scratch = bytearray(lm.FIXED_SIZE[lm.REGISTER_IMAGE])
        app.journal.listeners.append(self._on_event)

    def _on_event(self, ev):
        if ev[1] in ("fault", "trip"):
            self.fault_count = (self.fault_count + 1) & 0xFFFF
            self.last_fault = str(ev[2]).encode()[:8]

    # ---- commands ----

    def on_setpoint(self, now_ms, setpoint_id, p_w, q_var):
        sup = self.sup
        key = "L%d" % setpoint_id
        dup = key == sup.setpoint_id or key in sup.seen_ids
        ok = sup.command_setpoint(self.app.hal.ticks_ms(), key, p_w, q_var)
        if ok:
            self.last_id, self.last_key = setpoint_id, key
            return lm.OK
        if dup:
            return lm.DUPLICATE, "setpoint id %d already applied" % setpoint_id
        rated = self.app.held["p_rated_w"]
        return lm.REJECTED, "p_w %d / q_var %d outside +/-%d" % (p_w, q_var, rated)

    def on_config(self, now_ms, cfg):
        app = self.app
        if app.flash_held():
            return False, ("not stored while energized: a flash write stalls the tick on "
                           "this board (flash_stalls_tick); store it de-energized")
        merged = dict(app.config)
        merged.update(cfg)
        held, errors = params.validate(merged)
        if not errors:
            errors = app.config_errors(held)  # does it fit this board (app.board_errors)
        if not errors:
            try:
                stored = config_store.merged(app.root)
            except (OSError, ValueError):
                stored = {}
            stored.update(cfg)
            try:
                errors = config_store.save(stored, app.root)
            except OSError as e:
                errors = ["flash write failed: %s" % e]
        if errors:
            return False, "; ".join(errors)
        app.config = merged
        return True, ""

    def on_ev_limits(self, now_ms, max_charge_w, max_discharge_w, soc_min_permille):
        if max_charge_w < 0 or max_discharge_w < 0 or soc_min_permille > 1000:
            return lm.REJECTED, "limits must be >= 0 W and soc_min <= 1000 permille"
        self.sup.set_ev_limits(max_charge_w, max_discharge_w, soc_min_permille / 1000)
        return lm.OK

    def on_session(self, now_ms, action, session_id):
        self.sup.session(self.app.hal.ticks_ms(), action == lm.SESSION_START)
        return lm.OK

    update = None  # the update service (group 1), made at its first request

    def on_service(self, now_ms, group, command, data):
        """SERVICE_REQ: group 1 is the signed update over the link (update_link.py)."""
        from services import update_link

        if group != update_link.GROUP:
            return lm.UNSUPPORTED, "service group %d unknown" % group
        if self.update is None:
            self.update = update_link.UpdateService(self.app)
        return self.update.on_service(now_ms, command, data)

    def on_ev_soc(self, now_ms, soc_pm):
        if soc_pm > 1000 and soc_pm != lm.SOC_UNKNOWN:
            return lm.REJECTED, "soc_pm %d not 0..1000 or 65535 (unknown)" % soc_pm
        ej = self.app.energy_journal
        if ej is not None:
            ej.set_soc(None if soc_pm == lm.SOC_UNKNOWN else soc_pm)
        return lm.OK

    def on_link_state(self, now_ms, state):
        lk = self.link
        self.sup.set_link_state(self.app.hal.ticks_ms(), link.STATE_NAMES[state],
                                lk.degraded if lk is not None else False)

    def on_log(self, now_ms, kind, detail):
        pass  # counted in the link's counters; faults and states go to the journal

    # ---- energy records (services/energy_journal.py) ----

    def energy_record(self, min_no):
        ej = self.app.energy_journal
        return ej.next_record(min_no) if ej is not None else None

    def on_energy_ack(self, now_ms, record_no):
        ej = self.app.energy_journal
        if ej is not None:
            ej.ack(record_no)

    # ---- the register image ----

    def pack_image(self, buf, offset, now_ms):
        """The register image (link_msgs.REGISTER_FIELDS) packed straight into ``buf`` at
        ``offset`` with one ``struct.pack_into`` of plain arguments: no values tuple, and
        integer maths where the v1 image used floats (frequency, voltages, DC link,
        energy); the module temperature is the one float left."""
        app = self.app
        sup = self.sup
        ctl = app.ctl
        st = ctl.pll
        cc = ctl.cc
        rated = self.rated
        p_meas = (cc[current.P_MEAS] * rated) >> 12
        q_meas = (cc[current.Q_MEAS] * rated) >> 12
        gm = self.gm
        if gm is not None:
            a_q12 = params.isqrt(gm[grid_measure.MAG2_A])
            b_q12 = params.isqrt(gm[grid_measure.MAG2_B])
            c_q12 = params.isqrt(gm[grid_measure.MAG2_C])
        else:
            a_q12 = b_q12 = c_q12 = st[pll.V_POS]
        lo = min(a_q12, b_q12, c_q12)
        hi = max(a_q12, b_q12, c_q12)
        v_nom_dv = self.v_nom_dv
        i_q12 = params.isqrt(cc[current.I_D] * cc[current.I_D] + cc[current.I_Q] * cc[current.I_Q])
        s_va = params.isqrt(p_meas * p_meas + q_meas * q_meas)
        if s_va * 1000 < rated:
            pf = lm.PF_NONE
        elif p_meas < 0:
            pf = -((-p_meas * 1000 + (s_va >> 1)) // s_va)
        else:
            pf = (p_meas * 1000 + (s_va >> 1)) // s_va
        lk = self.link
        flags = ((lm.FLAG_LOCKED if st[pll.LOCKED] else 0)
                 | (lm.FLAG_PERMIT if sup.permit else 0)
                 | (lm.FLAG_CEASED if sup.ceased or sup.hold_ceased else 0)
                 | (lm.FLAG_LINK_DEGRADED if lk is not None and lk.degraded else 0)
                 | (lm.FLAG_LINK_LOST if lk is not None and lk.lost else 0))
        t_mod = sup.thermal.t_module_c
        stats = ctl.stats
        sp_id = self.last_id if sup.setpoint_id == self.last_key else 0
        imp_mwh = sup.meter.imp_mwh[3]
        exp_mwh = sup.meter.exp_mwh[3]
        v_dc_q12 = (ctl.raw[6] - ctl.cal[6]) * ctl.cal[13] >> 14
        if lk is not None:
            lc = lk.counters
            l_state, l_crc, l_lost, l_gaps = (lk.state, lc[link.CRC_ERRORS] & 0xFFFF,
                                              lc[link.LOST_FRAMES] & 0xFFFF,
                                              lc[link.HB_GAPS] & 0xFFFF)
        else:
            l_state = l_crc = l_lost = l_gaps = 0
        struct.pack_into(
            self.fmt, buf, offset,
            now_ms & 0xFFFFFFFF,
            lm.STATES.index(sup.state) if sup.state in lm.STATES else 0,
            sup.contactor_status(),
            _clamp(int(sup.derate_pct), 0, 255),
            flags,
            (st[pll.W_F_Q6] * st[pll.TICK_HZ] * 125) >> 31,  # mHz (pll.f_hz, no float)
            _clamp(lo * 1000 >> 12, 0, 65535),
            _clamp(hi * 1000 >> 12, 0, 65535),
            _clamp(v_dc_q12 * self.v_base_mv // 409600, 0, 65535),
            int(sup.p_cmd_w),
            int(sup.q_cmd_var),
            sp_id or 0,
            _clamp(int(t_mod * 10), -32768, 32767) if t_mod is not None else 0,
            (imp_mwh // 1000) & 0xFFFFFFFF,
            (exp_mwh // 1000) & 0xFFFFFFFF,
            _clamp(int(sup.ev_max_charge_w), -2**31, 2**31 - 1),
            _clamp(int(sup.ev_max_discharge_w), -2**31, 2**31 - 1),
            self.fault_count,
            self.last_fault,
            stats[tick.COUNT],
            stats[tick.OVERRUNS],
            p_meas,
            q_meas,
            _clamp(a_q12 * v_nom_dv >> 12, 0, 65535),
            _clamp(b_q12 * v_nom_dv >> 12, 0, 65535),
            _clamp(c_q12 * v_nom_dv >> 12, 0, 65535),
            _clamp(i_q12 * self.i_base_ca >> 12, 0, 65535),
            pf,
            _clamp(stats[tick.COST_US], 0, 65535),
            _clamp(stats[tick.COST_MAX_US], 0, 65535),
            _clamp(stats[tick.PERIOD_US], 0, 65535),
            l_state, l_crc, l_lost, l_gaps,
            imp_mwh % 1000, exp_mwh % 1000)
        return True

    def register_image(self, now_ms):
        """The image as a tuple in REGISTER_FIELDS order (tests and tools; the link sends
        ``pack_image``'s bytes)."""
        self.pack_image(self.scratch, 0, now_ms)
        return struct.unpack_from(self.fmt, self.scratch, 0)


def open_stream(app):
    """The link's byte stream, or None when the board has no link: the board data names
    one (``"link": {...}``) and the HAL opens it (``hal.link_stream()``), else a
    ``machine.UART(uart, baud, tx=, rx=)`` from the data."""
    spec = app.board.get("link")
    if not spec:
        return None
    fn = getattr(app.hal, "link_stream", None)
    if fn is not None:
        return fn()
    uart = spec.get("uart")
    if not isinstance(uart, int):
        return None
    import machine

    kw = {}
    for k in ("tx", "rx"):
        if k in spec:
            kw[k] = machine.Pin(spec[k])
    return machine.UART(uart, spec.get("baud", 115200), timeout=0, **kw)


def make_link(app, write, clock):
    """The session with the table's link parameters, wired to ``app``."""
    h = app.held
    wiring = Wiring(app)
    lk = link.Link(wiring, write, name="v2g-fw %s" % app.board.get("name", "?"),
                   hb_period_ms=h["link_hb_period_ms"], hb_timeout_ms=h["link_hb_timeout_ms"],
                   image_period_ms=h["link_image_ms"], loss_window_ms=h["link_loss_window_ms"],
                   loss_permille=h["link_loss_permille"],
                   loss_min_frames=h["link_loss_min_frames"])
    wiring.link = lk
    return lk, wiring


def attach(app, write):
    """Build the session over ``write`` for ``app`` (``app.link``) and arm the
    supervisor's link gate (DOWN: nothing closes until the daemon speaks). Returns
    ``(link, wiring, clock)``."""
    clock = Clock(app.hal.ticks_ms)
    lk, wiring = make_link(app, write, clock)
    app.link = lk
    app.supervisor.set_link_state(app.hal.ticks_ms(), "DOWN")
    return lk, wiring, clock


def tasks(app):
    """Task makers for ``App.run``: one for the link where the board has one, else ()."""
    stream = open_stream(app)
    if stream is None:
        return ()
    writer = Writer(stream)
    app.link_writer = writer
    # armed before the supervisor's first step
    lk, _, clock = attach(app, writer)
    return (lambda a: serve(a, lk, stream, clock),)


async def serve(app, lk, stream, clock, chunk=128):
    """Read the stream into the session and run its timers every supervisor period,
    while the app runs. A read error (no peer on a pty, a UART hiccup) is waited out."""
    import asyncio

    import supervisor

    buf = bytearray(chunk)

    async def reader():
        sreader = asyncio.StreamReader(stream)
        while app.running:
            try:
                n = await sreader.readinto(buf)
            except _IO_ERRORS:
                n = None
                await asyncio.sleep_ms(100)
            if n and "link" not in app.hung:
                lk.receive(buf, n, clock())
            elif n == 0:
                await asyncio.sleep_ms(100)  # end of stream: the peer may come back

    task = asyncio.create_task(reader())
    sup = app.supervisor
    try:
        while app.running:
            if "link" not in app.hung:  # the sim's `hang: "link"` stops this task's work
                lk.service(clock())
                sup.link_alive(app.hal.ticks_ms())
            await asyncio.sleep_ms(supervisor.PERIOD_MS)
    finally:
        task.cancel()
