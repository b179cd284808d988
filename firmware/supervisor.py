"""Supervisor: the state machine around the tick, stepped every period (10 ms).

    BOOT -> WAIT_GRID -> SYNCING -> ENTER_SERVICE_DELAY -> ENERGIZED <-> DERATED
                 ^            |              |                  |
                 +------------+--------------+---- TRIPPED <----+      FAULT_LOCKOUT

- WAIT_GRID: PLL locked and the grid inside the integrity band (every phase within
  +/- ``integrity_band_pu``; fault ``0x07 GRID_INTEGRITY`` while it is not);
- SYNCING: DC side ready: pre-charge relay, DC link up, main contactor closed (aux);
- ENTER_SERVICE_DELAY: grid inside the enter-service window for ``enter_service_delay_s``
  and service permitted;
- ENERGIZED: current control enabled; the power command each period is the accepted
  setpoint clamped by the EV limits, the bidirectional flag, the enter-service ramp and
  the rating. DERATED is ENERGIZED with a thermal limit in force (supervision issue);
- TRIPPED: a trip latched (the tick already turned the PWM off); re-entry goes through
  the enter-service delay again once the grid is healthy;
- FAULT_LOCKOUT: stays de-energized until an operator clears it.

``step(now_ms)`` is pure control flow over the arrays the tick shares and the HAL; time
comes in as an argument, so the simulated board runs it in simulated time.
Context: supervisor (asyncio task on boards, the scenario loop in simulation).
"""

import math

import contactor
import current
import events
import grid_protect
import islanding
import meter
import params
import pll
import protect_fast
import thermal

BOOT = "BOOT"
WAIT_GRID = "WAIT_GRID"
SYNCING = "SYNCING"
ENTER_SERVICE_DELAY = "ENTER_SERVICE_DELAY"
ENERGIZED = "ENERGIZED"
DERATED = "DERATED"
TRIPPED = "TRIPPED"
FAULT_LOCKOUT = "FAULT_LOCKOUT"


PERIOD_MS = 10
PRECHARGE_TIMEOUT_MS = 3000
UNLOCK_TRIP_MS = 500
SEEN_IDS = 64  # setpoint ids remembered for idempotency
OVERRUN_PERMILLE = 10  # tick overruns above 1 % of a second's ticks raise fault 0x62  # healthy-looking voltage but no PLL lock this long: PLL fault
CONTACTOR_TIMEOUT_MS = 500
VDC_READY_MV = 500000  # the DC link counts as up (the unit's DC range is 500-1000 V)


class Supervisor:
    def __init__(self, ctl, hal, held, journal):
        self.ctl = ctl
        self.hal = hal
        self.held = held
        self.journal = journal
        self.state = BOOT
        self.since_ms = 0
        self.locked = 0
        self.permit = True
        self.setpoint_id = None
        self.seen_ids = []
        self.ov_since_ms = 0
        self.ov_last = 0
        self.ov_count = 0
        self.ov_fault = False
        self.setpoint_p_w = 0
        self.setpoint_q_var = 0
        self.ev_max_charge_w = held["p_rated_w"]
        self.ev_max_discharge_w = held["p_rated_w"]
        self.ev_soc_min = 0.0
        self.energized_ms = 0
        self.integrity_bad = False
        self.p_cmd_w = 0
        self.q_cmd_var = 0
        self.contactor = contactor.Contactor(hal)
        self.now_ms = 0
        self.derate_pct = 0
        self.gp = grid_protect.GridProtect(held, PERIOD_MS)
        # the tick's fast 1547 regions (OV2, UV2, OF2, UF2) follow the config too
        if hasattr(ctl, "set_grid_trips"):
            h = held
            ctl.set_grid_trips((h["ov2_pu"] * 4096 + 50) // 100, h["ov2_s"] * 10,
                               (h["uv2_pu"] * 4096 + 50) // 100, h["uv2_s"] * 10,
                               h["of2_dhz"] * 100, h["of2_s"] * 10,
                               -h["uf2_dhz"] * 100, h["uf2_s"] * 10)
        board = getattr(hal, "board", None) or {}
        self.thermal = thermal.Thermal(held, board.get("ntc"), board.get("thermal"))
        self.th_factor = 1.0
        self._fan_pct = None
        # anti-islanding Q perturbation: +/-0.8 % of |P| by default, inside the 1 % band
        # that P/Q setpoints are held to (a matched island still answers with k ~ 0.5)
        self.island = None
        if held["ai_enable"]:
            self.island = islanding.Detector(held["f_nom_hz"], PERIOD_MS,
                                             i_max_q12=held["i_max_pu"] * 4096 // 100,
                                             amp_permille=held["ai_amp_pct"])
        self.ceased = False
        self.unlocked_since = None
        self.v_max = 1.0
        self.v_base_mv = params.v_peak_mv(held)
        self.vdc_ready_q12 = VDC_READY_MV * 4096 // self.v_base_mv
        # session and link gate (see "session and link gate" below): with no link on the
        # board (link_state None) and no session event, nothing there ever acts
        self.session_on = True
        self.link_state = None
        self.link_degraded = False
        self.link_alive_ms = 0
        self.hold_ceased = False
        # energy metering (meter.py): integrated from the tick's measured power each step
        self.meter = meter.Meter(held["p_rated_w"], getattr(ctl, "gm", None))

    # ---- commands (from the link, Modbus, MQTT or a scenario) ----

    def command_setpoint(self, now_ms, sp_id, p_w, q_var):
        """Idempotent: an id seen before (the current one or any of the last SEEN_IDS)
        changes nothing -- a re-sent or late-arriving old request must not bring back an
        old setpoint; a new id replaces the setpoint, never adds to it."""
        if sp_id == self.setpoint_id or sp_id in self.seen_ids:
            self.journal.add(now_ms, "setpoint_duplicate", detail="id=%s" % sp_id)
            return False
        rated = self.held["p_rated_w"]
        if not (-rated <= p_w <= rated and -rated <= q_var <= rated):
            self.journal.add(now_ms, "setpoint_rejected",
                             detail="id=%s p_w=%s q_var=%s outside +/-%d" % (sp_id, p_w, q_var,
                                                                             rated))
            return False
        self.seen_ids.append(sp_id)
        if len(self.seen_ids) > SEEN_IDS:
            self.seen_ids.pop(0)
        self.setpoint_id = sp_id
        self.setpoint_p_w = p_w
        self.setpoint_q_var = q_var
        self.journal.add(now_ms, "setpoint_accepted",
                         detail="id=%s p_w=%s q_var=%s" % (sp_id, p_w, q_var))
        if self.state in (ENERGIZED, DERATED) and not self.hold_ceased:
            self._apply_power(now_ms)  # at once, not at the next period
        return True

    def permit_service(self, now_ms, on):
        self.permit = bool(on)

    def set_ev_limits(self, max_charge_w=None, max_discharge_w=None, soc_min=None):
        if max_charge_w is not None:
            self.ev_max_charge_w = max(0, max_charge_w)
        if max_discharge_w is not None:
            self.ev_max_discharge_w = max(0, max_discharge_w)
        if soc_min is not None:
            self.ev_soc_min = soc_min

    # ---- session and link gate (services/link_service.py, scenario event `session`) ----
    #
    # Power may flow only while a session is on and, on a board with a link, the link is
    # UP. Session stop, link DOWN (configured but no daemon yet: a board that never hears
    # the daemon never closes its contactors) or LOST (no frame for link_hb_timeout_ms):
    # power ceases at once (PWM off at the next tick), the DC contactors open one period
    # later through the contactor supervision (a weld shows STUCK OPEN_TIMEOUT_MS after
    # that) and the unit waits in WAIT_GRID until the gate opens again. DEGRADED (frame
    # loss above link_loss_permille: fault V2G-502): power ceases, the contactors stay
    # closed and the grid protection keeps running; power resumes when the loss is back
    # under the threshold. The link task reports every pass (``link_alive``); a task that
    # stops doing so for link_hb_timeout_ms counts as LOST here too (a hung or dead task
    # cannot leave the unit exporting). Calls happen in the supervisor's context (the
    # link's task).

    def session(self, now_ms, start):
        """Session start (True) or stop (False), from the link or the scenario event."""
        start = bool(start)
        if start != self.session_on:
            self.session_on = start
            self.journal.add(now_ms, "state", name="SESSION_START" if start
                             else "SESSION_STOP")
        if not start:
            self._hold(now_ms)  # cease now, not at the next period

    def set_link_state(self, now_ms, name, degraded=False):
        """The link's state by name ("DOWN", "UP", "DEGRADED", "LOST") and whether its
        loss estimate is above the threshold (V2G-502 raised / cleared here)."""
        degraded = bool(degraded)
        if degraded != self.link_degraded:
            self.link_degraded = degraded
            if degraded:
                self.journal.fault(now_ms, "V2G-502", "link frame loss above %d permille "
                                   "over %d ms" % (self.held["link_loss_permille"],
                                                   self.held["link_loss_window_ms"]))
            else:
                self.journal.add(now_ms, "clear", "V2G-502", "PACKET_LOSS")
        self.link_alive_ms = now_ms
        if name != self.link_state:
            self.link_state = name
            self.journal.add(now_ms, "state", name="LINK_" + name)
            if name in ("DOWN", "LOST"):
                self._hold(now_ms)

    def link_alive(self, now_ms):
        """The link task's pass mark (every supervisor period)."""
        self.link_alive_ms = now_ms

    def power_allowed(self):
        """(contactors may close, power may flow) under the session and link gate."""
        ls = self.link_state
        close = self.session_on and ls not in ("DOWN", "LOST")
        if close and ls is not None and \
                self.now_ms - self.link_alive_ms > self.held["link_hb_timeout_ms"]:
            close = False  # the link task itself stopped: as LOST
        return close, close and not self.link_degraded

    def _hold(self, now_ms):
        """Apply the gate; True when it decided this period's state (the state machine
        then does nothing more this period)."""
        may_close, may_power = self.power_allowed()
        if may_power:
            self.hold_ceased = False
            return False
        s = self.state
        if s in (ENERGIZED, DERATED):
            if not self.hold_ceased:
                self.hold_ceased = True
                self._deenergize()  # act first: PWM off at the next tick
                return not may_close
            if may_close:
                return False  # DEGRADED: protection runs on, _energized keeps power off
            self._contactors(0, 0)  # then open, with no current flowing
            self._goto(now_ms, WAIT_GRID)
            return True
        if s in (SYNCING, ENTER_SERVICE_DELAY) and not may_close:
            self._contactors(0, 0)
            self._goto(now_ms, WAIT_GRID)
            return True
        if s == ENTER_SERVICE_DELAY:
            self.since_ms = now_ms  # DEGRADED: the enter-service delay waits
            return True
        return s == WAIT_GRID and not may_close

    # ---- measurements ----

    def grid(self):
        """(locked, v_pos_pu, f_hz) from the PLL."""
        st = self.ctl.pll
        return st[pll.LOCKED], st[pll.V_POS] / 4096, pll.f_hz(st)

    def in_enter_service_window(self, v_pu, f_hz):
        h = self.held
        f_nom = h["f_nom_hz"]
        return (h["es_v_min_pu"] / 1000 <= v_pu <= h["es_v_max_pu"] / 1000
                and f_nom - h["es_df_low_hz"] / 10 <= f_hz <= f_nom + h["es_df_high_hz"] / 10)

    def contactor_status(self):
        """Modbus 40001 code: 0 STUCK, 1 OPEN, 2 CLOSED, 3 PRECHARGING, 4 OPENING."""
        return self.contactor.status

    @property
    def contactor_main(self):
        return self.contactor.main

    @property
    def contactor_pre(self):
        return self.contactor.pre

    def lockout(self, now_ms):
        """Enter FAULT_LOCKOUT: nothing energizes until ``clear_lockout``."""
        self._deenergize()
        self._contactors(0, 0)
        self._goto(now_ms, FAULT_LOCKOUT)

    def clear_lockout(self, now_ms):
        """Operator action after inspection (REPL, Modbus later): leave FAULT_LOCKOUT."""
        if self.state != FAULT_LOCKOUT:
            return False
        self.contactor.clear(now_ms)
        protect_fast.clear(self.ctl.prot)
        self.journal.add(now_ms, "clear", "0x61", "LOCKOUT", "operator")
        self._goto(now_ms, WAIT_GRID)
        return True

    # ---- state machine ----

    def _goto(self, now_ms, state):
        if state != self.state:
            self.state = state
            self.since_ms = now_ms
            self.journal.add(now_ms, "state", name=state)

    def _contactors(self, main_on, pre_on):
        self.contactor.command(self.now_ms, main_on, pre_on)

    def v_dc_v(self):
        return ((self.ctl.raw[6] - self.ctl.cal[6]) * self.ctl.cal[13] >> 14) \
            * self.v_base_mv / 4096000

    def _deenergize(self):
        current.set_enable(self.ctl.cc, 0)
        current.set_power(self.ctl.cc, 0, 0)
        self.p_cmd_w = 0
        self.q_cmd_var = 0

    def phase_voltages(self):
        """(v_min, v_max) per unit over the three phases: per-phase fundamental magnitudes
        from the tick's grid measurement, or the positive-sequence amplitude where the
        control has none."""
        gm = getattr(self.ctl, "gm", None)
        if gm is not None:
            import grid_measure

            v = grid_measure.phase_rms_pu(gm)
            return min(v), max(v)
        v = self.ctl.pll[pll.V_POS] / 4096
        return v, v

    def trip_name(self, code):
        return grid_protect.NAMES.get(code) or events.code_hex(code)

    def trip(self, now_ms, name, detail):
        """Latch a supervisor-detected trip (``name``: a 1547 function such as "OV1", or a
        fault code such as "0x10"): the latch turns the PWM off at the next tick (act
        first), then the DC contactor opens, then the trip is reported."""
        code = grid_protect.CODES[name] if name in grid_protect.CODES else int(name, 16)
        protect_fast.trip(self.ctl.prot, code)
        self._deenergize()
        self._contactors(0, 0)
        self.journal.add(now_ms, "trip", name,
                         events.fault_name(code) if name.startswith("0x") else name, detail)
        self._goto(now_ms, TRIPPED)

    def _thermal(self, now_ms):
        """Temperatures, fan and the thermal power limit, every period in every state
        (fan and sensor checks run while de-energized too)."""
        cc = self.ctl.cc
        i_pu = (math.sqrt(cc[current.I_D] ** 2 + cc[current.I_Q] ** 2) / 4096
                if self.state in (ENERGIZED, DERATED) else 0.0)
        v_dc_v = self.v_dc_v()
        factor, fan, evs = self.thermal.step(now_ms, self.hal.ntc_raw(), i_pu,
                                             self.hal.fan_tach_hz(), v_dc_v)
        for ev in evs:
            self.journal.add(now_ms, *ev)
        if fan != self._fan_pct:
            self.hal.fan(fan)
            self._fan_pct = fan
        self.th_factor = factor
        self.derate_pct = self.thermal.derate_pct
        if self.thermal.overtemp and self.state in (ENERGIZED, DERATED):
            self.trip(now_ms, "0x50", self.thermal.faults.get("0x50", ""))

    def _overruns(self, now_ms):
        """Tick overruns: more than OVERRUN_PERMILLE of the ticks in a second is a fault
        (the control is not getting its period; raise it once per episode)."""
        if now_ms - self.ov_since_ms < 1000:
            return
        st = self.ctl.stats
        ov = st[3]  # tick.OVERRUNS
        n = (st[0] - self.ov_count) & 0x3FFFFFFF  # tick.COUNT, modulo 2**30
        bad = n > 0 and (ov - self.ov_last) * 1000 > OVERRUN_PERMILLE * n
        if bad and not self.ov_fault:
            self.journal.fault(now_ms, "0x62", "%d of %d ticks overran in 1 s" % (
                ov - self.ov_last, n))
        self.ov_fault = bad
        self.ov_last = ov
        self.ov_count = st[0]
        self.ov_since_ms = now_ms

    def step(self, now_ms):
        self.now_ms = now_ms
        self.meter.step(now_ms, self.ctl.cc)
        self._overruns(now_ms)
        locked, v_pu, f_hz = self.grid()
        v_min, v_max = self.phase_voltages()
        self._thermal(now_ms)
        stuck = self.contactor.step(now_ms, self.v_dc_v())
        if stuck is not None:
            # a welded or dead contactor: energizing is blocked until an operator clears it
            if self.state in (ENERGIZED, DERATED):
                protect_fast.trip(self.ctl.prot, 0x32)
            self.journal.fault(now_ms, "0x32", stuck)
            self.lockout(now_ms)
        if locked != self.locked:
            self.locked = locked
            self.journal.add(now_ms, "lock" if locked else "unlock",
                             detail="f=%.3fHz v=%.3fpu" % (f_hz, v_pu))
        code, value = protect_fast.latched(self.ctl.prot)
        if code and self.state not in (TRIPPED, FAULT_LOCKOUT):
            # latched by the tick, which has already turned the PWM off: follow and report
            self._deenergize()
            self._contactors(0, 0)
            name = self.trip_name(code)
            self.journal.add(now_ms, "trip", name, events.fault_name(code)
                             if name.startswith("0x") else name,
                             "value=%.3fpu v_min=%.3fpu v_max=%.3fpu f=%.3fHz"
                             % (value / 4096, v_min, v_max, f_hz))
            self._goto(now_ms, TRIPPED)
        # islanding: fed every period; "active" = current flowed during the last period
        active = (self.state in (ENERGIZED, DERATED) and self.permit and not self.ceased
                  and locked and not self.hold_ceased)
        hit = self.island.step(now_ms, f_hz, v_pu, active) if self.island else None
        if hit is not None and active:
            self.trip(now_ms, hit[0], hit[1])  # "ISLAND": PWM off, contactor open, TRIPPED
        if self._hold(now_ms):
            return
        s = self.state
        if s == BOOT:
            self._contactors(0, 0)
            self._goto(now_ms, WAIT_GRID)
        elif s == WAIT_GRID:
            if self._grid_ok(now_ms, locked, v_min, v_max, f_hz):
                self._contactors(0, 1)
                self._goto(now_ms, SYNCING)
        elif s == SYNCING:
            self._syncing(now_ms, locked, v_pu, f_hz)
        elif s == ENTER_SERVICE_DELAY:
            if not self._grid_ok(now_ms, locked, v_min, v_max, f_hz):
                self._goto(now_ms, WAIT_GRID)
            elif not (self.permit and self.in_enter_service_window(v_min, f_hz)
                      and self.in_enter_service_window(v_max, f_hz)):
                self.since_ms = now_ms  # the delay restarts
            elif self.thermal.overtemp:
                self.since_ms = now_ms  # too hot to enter service
            elif now_ms - self.since_ms >= self.held["enter_service_delay_s"] * 100:
                self.energized_ms = now_ms
                self.gp.reset()
                self.ceased = False
                current.set_enable(self.ctl.cc, 1)
                self._goto(now_ms, ENERGIZED)
        elif s in (ENERGIZED, DERATED):
            self._energized(now_ms, locked, v_min, v_max, f_hz)
        elif s == TRIPPED:
            self._deenergize()
            if now_ms - self.since_ms >= 1000 and not self.thermal.overtemp and \
                    self._grid_ok(now_ms, locked, v_min, v_max, f_hz):
                protect_fast.clear(self.ctl.prot)
                self.gp.reset()
                if self.island:
                    self.island.reset()
                self.journal.add(now_ms, "clear", self.trip_name(code) if code else "")
                self._goto(now_ms, WAIT_GRID)

    def _energized(self, now_ms, locked, v_min, v_max, f_hz):
        if not self.permit:
            self._deenergize()
            self._goto(now_ms, ENTER_SERVICE_DELAY)
            return
        tripped = self.gp.step(now_ms, v_min, v_max, f_hz, f_valid=locked)
        if tripped:
            self.trip(now_ms, tripped[0], tripped[1])
            return
        region = self.gp.region(v_min, v_max)
        if not locked:
            # no angle to synchronise to: cease (momentarily) and let the voltage timers
            # decide; a grid that stays healthy but unlocked is a PLL fault. The time is
            # counted only while the voltage is healthy: after a deep sag the PLL needs a
            # few cycles to lock again, and that must not count as a fault.
            if region not in ("continuous", "mandatory"):
                self.unlocked_since = None
            elif self.unlocked_since is None:
                self.unlocked_since = now_ms
            elif now_ms - self.unlocked_since >= UNLOCK_TRIP_MS:
                self.trip(now_ms, "0x10", "unlocked %dms at v_min=%.3fpu" % (
                    now_ms - self.unlocked_since, v_min))
                return
            region = "momentary"
        else:
            self.unlocked_since = None
        cease = region in ("momentary", "cease")
        if cease != self.ceased:
            self.ceased = cease
            self.journal.add(now_ms, "state", name="MOMENTARY_CESSATION" if cease
                             else self.state, detail="region=%s v_min=%.3fpu v_max=%.3fpu"
                             % (region, v_min, v_max))
        if cease or self.hold_ceased:
            current.set_enable(self.ctl.cc, 0)
            return
        current.set_enable(self.ctl.cc, 1)
        self._goto(now_ms, DERATED if self.thermal.derated else ENERGIZED)
        self.v_max = v_max
        self._apply_power(now_ms)

    def _grid_ok(self, now_ms, locked, v_min, v_max, f_hz):
        """Grid-integrity gate: locked and every phase within +/- integrity_band_pu."""
        band = self.held["integrity_band_pu"] / 100
        ok = locked and v_min >= 1.0 - band and v_max <= 1.0 + band
        if locked and not ok and not self.integrity_bad:
            self.journal.fault(now_ms, "0x07", "v_min=%.3fpu v_max=%.3fpu f=%.3fHz"
                               % (v_min, v_max, f_hz))
        if ok and self.integrity_bad:
            self.journal.add(now_ms, "clear", "0x07", "GRID_INTEGRITY")
        self.integrity_bad = locked and not ok
        return ok

    def _syncing(self, now_ms, locked, v_pu, f_hz):
        v_min, v_max = self.phase_voltages()
        if not self._grid_ok(now_ms, locked, v_min, v_max, f_hz):
            self._contactors(0, 0)
            self._goto(now_ms, WAIT_GRID)
            return
        v_dc = (self.ctl.raw[6] - self.ctl.cal[6]) * self.ctl.cal[13] >> 14
        if self.contactor_pre and not self.contactor_main:
            if v_dc >= self.vdc_ready_q12:
                self._contactors(1, 1)
            elif now_ms - self.since_ms > PRECHARGE_TIMEOUT_MS:
                self._contactors(0, 0)
                self.journal.fault(now_ms, "0x31",
                                   "v_dc=%dV" % (v_dc * self.v_base_mv // 4096000))
                self._goto(now_ms, FAULT_LOCKOUT)
        elif self.contactor_main:
            if self.contactor.status == contactor.CLOSED:
                self._contactors(1, 0)
                self._goto(now_ms, ENTER_SERVICE_DELAY)
            elif now_ms - self.since_ms > PRECHARGE_TIMEOUT_MS + CONTACTOR_TIMEOUT_MS:
                self._contactors(0, 0)
                self.journal.fault(now_ms, "0x32", "aux=open")
                self._goto(now_ms, FAULT_LOCKOUT)

    def _apply_power(self, now_ms):
        h = self.held
        rated = h["p_rated_w"]
        p = self.setpoint_p_w
        q = self.setpoint_q_var
        p = min(p, self.ev_max_charge_w)
        p = max(p, -self.ev_max_discharge_w)
        if not h["bidirectional"]:
            p = max(p, 0)
        lim = rated * self.th_factor  # thermal: a limit on current, so on apparent power
        p = max(-lim, min(lim, p))
        q_max = math.sqrt(max(0.0, lim * lim - p * p))
        q = max(-q_max, min(q_max, q))
        if p < 0:  # volt-watt: export shrinks as the voltage rises (never pushes it up)
            p = max(p, -rated * self.gp.export_limit_pu(self.v_max))
        ramp_s = h["enter_service_ramp_s"] / 10
        if ramp_s > 0:
            frac = (now_ms - self.energized_ms) / (ramp_s * 1000)
            if frac < 1:
                lim = rated * frac
                p = max(-lim, min(lim, p))
        self.p_cmd_w = p
        self.q_cmd_var = q
        p_q12 = int(p * 4096 // rated)
        q_q12 = int(q * 4096 // rated)
        q_x, p_x = (self.island.perturbation(now_ms, True, p_q12, q_q12) if self.island
                    else (0, 0))
        current.set_power(self.ctl.cc, p_q12 + p_x, q_q12 + q_x)
