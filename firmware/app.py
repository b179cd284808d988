"""Boot and run: the order in which the controller comes up, and its asyncio tasks.

Boot (``App(...)``), in this order:
1. outputs to a safe state (``hal.safe_outputs()``: gates off, contactors open) before
   anything else can fail;
2. device config: ``config.json``, else the last good one, else defaults (reasons logged);
3. the board's HAL from ``board.json``;
4. the control arrays and the tick handler (every object the ISR needs exists first);
5. the supervisor.
``start()`` then arms the hardware watchdog and the tick timer; ``run()`` runs the
supervisor and services on asyncio until stopped, outputs safe on the way out.

The watchdog is fed by the supervisor task only, and only while the tick counter moves.
An interrupted ``main.py`` (Ctrl-C from mpremote on a real board) stops the feeding:
outputs go safe at once, and the watchdog resets the board into ``main.py`` again unless
the board data says ``"dev_mode": true`` (no watchdog: for the bench, never in the field).

Context: boot, then supervisor.
"""

import json

import config_store
import eventlog
import events
import params
import supervisor
import tick

RESETS = "resets.json"  # consecutive watchdog resets, kept on flash across resets
VOLTAGE_CHANNELS = (tick.VA, tick.VB, tick.VC, tick.VDC)
CURRENT_CHANNELS = (tick.IA, tick.IB, tick.IC)


def load_board(path="board.json"):
    with open(path) as f:
        return json.load(f)


def d_min_counts(board):
    """Dead time plus minimum on-time in PWM counts (integer math)."""
    ns = board["dead_time_ns"] + board["min_on_ns"]
    return (ns * board["pwm_period_counts"] * board["pwm_freq_hz"] + 999999999) // 1000000000


def adc_gains(board, held):
    """Board ADC gains rescaled from the board's bases to this config's bases (nominal
    phase peak voltage, rated peak current)."""
    v_base_mv = params.v_peak_mv(held)
    i_base_ma = 2 * held["p_rated_w"] * 1000000 // (3 * v_base_mv)
    gains = []
    for ch, spec in enumerate(board["adc"]):
        g = spec["gain_q14"]
        if ch in VOLTAGE_CHANNELS:
            g = g * board["v_base_mv"] // v_base_mv
        else:
            g = g * board["i_base_ma"] // i_base_ma
        gains.append(g)
    return gains


def build_control(board, held):
    """The tick's arrays for this board and config; raises ValueError when the config does
    not fit the board (e.g. a rating whose per-unit current would exceed the ADC range)."""
    tick_hz = board["tick_hz"]
    cc_params, prot_params = params.control_ints(held, tick_hz)
    return tick.Control(tick_hz, held["f_nom_hz"], [spec["offset"] for spec in board["adc"]],
                        adc_gains(board, held), board["pwm_period_counts"],
                        d_min_counts(board), cc_params, prot_params)


def board_errors(board, held):
    """Config problems that only this board reveals (host ``config push`` and boot)."""
    try:
        build_control(board, held)
    except ValueError as e:
        return ["config does not fit board '%s': %s" % (board.get("name", "?"), e)]
    return []


class App:
    def __init__(self, hal_module, board, root="", overrides=None, journal=None):
        hal_module.safe_outputs()
        self.journal = journal if journal is not None else events.Journal()
        self.flash_stalls_tick = bool(board.get("flash_stalls_tick"))
        self.resets_unsaved = False  # the forgiven watchdog count waits for a flash write
        self.eventlog = None
        if not board.get("no_log"):
            try:
                # attach() also records what the boot reports from here on
                self.eventlog = eventlog.Log(root + "log")
                self.eventlog.attach(self.journal)
            except OSError:
                self.eventlog = None  # flash unreadable: the in-memory journal only
        held, cfg, notes = config_store.load(root, overrides)
        for note in notes:
            if not note.startswith("no "):
                self.journal.fault(0, "0x30", note)
        try:
            self.ctl = build_control(board, held)
        except ValueError as e:
            # a config that validates but does not fit this board: boot on the defaults
            # rather than not at all (outputs stay safe either way)
            self.journal.fault(0, "0x30", "config does not fit the board (%s); defaults in "
                                          "use" % e)
            held, cfg = params.defaults(), {}
            self.ctl = build_control(board, held)
        self.held = held
        self.config = cfg
        self.board = board
        self.hal = hal_module.build(board)
        if self.eventlog is not None:
            utc = eventlog.rtc_utc_ms()  # None when the board has no set real-time clock
            if utc is not None:
                self.eventlog.set_utc(utc, self.hal.ticks_ms())
        self.tick = tick.make_tick(self.hal, self.ctl)
        self.supervisor = supervisor.Supervisor(self.ctl, self.hal, held, self.journal)
        self.root = root
        self.energy_journal = None
        if not board.get("no_log"):
            self._open_energy_journal(root)
        self.healthy_ms = 0
        self._watchdog_history()
        self.last_count = -1
        self.running = False

    def _open_energy_journal(self, root):
        """The billing records on flash (services/energy_journal.py); a flash that cannot
        be read leaves the board without one (metering goes on in RAM)."""
        from services import energy_journal

        el = self.eventlog
        try:
            ej = energy_journal.EnergyJournal(
                root + "energy", self.board.get("energy_segments", 4),
                self.board.get("energy_records_per_segment", 32),
                interval_s=self.board.get("energy_interval_s", 60),
                reset_cause=self.hal.reset_cause(),
                clock=el.utc_s if el is not None else None)
        except (OSError, ValueError) as e:  # ValueError: a ring the board data cannot have
            self.journal.fault(0, "0x30", "energy journal unusable: %s" % e)
            return
        ej.attach(self.journal, self.supervisor.meter)
        self.energy_journal = ej

    def _watchdog_history(self):
        """Count consecutive watchdog resets on flash; k of them lock the unit out."""
        path = self.root + RESETS
        try:
            with open(path) as f:
                count = json.load(f).get("wdt_resets", 0)
        except (OSError, ValueError):
            count = 0
        if self.hal.reset_cause() == "wdt":
            count += 1
            self.journal.fault(0, "0x60", "consecutive=%d" % count)
            if count >= self.held["wdt_lockout_k"]:
                self.journal.fault(0, "0x61", "%d watchdog resets in a row" % count)
                self.supervisor.lockout(0)
        self.wdt_resets = count
        self._store_resets(count)

    def _store_resets(self, count):
        try:
            config_store.write_atomic(self.root + RESETS, json.dumps({"wdt_resets": count}))
        except OSError:
            pass

    def start(self):
        """Arm the watchdog (unless dev_mode) and start the tick timer."""
        if not self.board.get("dev_mode"):
            self.hal.wdt_start(self.board["wdt_timeout_ms"])
        self.hal.start_tick(self.tick)
        self.running = True

    def healthy(self):
        """True when the tick has advanced since the last check (its heartbeat)."""
        count = self.ctl.stats[tick.COUNT]
        ok = count != self.last_count
        self.last_count = count
        return ok

    def flash_held(self):
        """True while a flash write would stall the tick of the energized converter
        (``flash_stalls_tick`` boards): writes wait for the next de-energized period."""
        return self.flash_stalls_tick and self.supervisor.state in (
            supervisor.ENERGIZED, supervisor.DERATED)

    def supervise_once(self, now_ms):
        self.supervisor.step(now_ms)
        # while energized: the event log writes INFO records later; on a board whose flash
        # writes stall the tick (rp2 runs them with interrupts off) nothing is written at
        # all until the converter is de-energized (eventlog.py, energy_journal.py)
        energized = self.supervisor.state in (supervisor.ENERGIZED, supervisor.DERATED)
        stalls = self.flash_stalls_tick
        if self.wdt_resets and self.supervisor.state != supervisor.FAULT_LOCKOUT:
            self.healthy_ms += supervisor.PERIOD_MS
            if self.healthy_ms >= self.held["wdt_window_s"] * 1000:
                self.wdt_resets = 0  # long healthy run: earlier resets are forgiven
                self.resets_unsaved = True
        if self.resets_unsaved and not (energized and stalls):
            self.resets_unsaved = False
            self._store_resets(0)
        if self.energy_journal is not None:
            self.energy_journal.step(now_ms, self.supervisor.meter, hold=energized and stalls)
        if self.eventlog is not None:
            self.eventlog.service(now_ms, hold=energized, strict=stalls)
        if self.healthy():
            self.hal.wdt_feed()

    async def supervise(self):
        import asyncio

        last = None
        while self.running:
            now = self.hal.ticks_ms()
            if last is not None:  # lateness of this step beyond one period (ticks wrap 2**30)
                late = ((now - last) & 0x3FFFFFFF) - supervisor.PERIOD_MS
                if late > self.sup_late_max_ms:
                    self.sup_late_max_ms = late
            last = now
            self.supervise_once(now)
            await asyncio.sleep_ms(supervisor.PERIOD_MS)

    def stop(self):
        """Outputs safe first, then stop the tick."""
        self.running = False
        self.hal.pwm_off()
        self.hal.contactor(0, 0)
        self.hal.stop_tick()
        if self.energy_journal is not None:
            self.energy_journal.close(self.hal.ticks_ms(), self.supervisor.meter)
        if self.eventlog is not None:
            self.eventlog.close()

    # ---- board-side services (firmware/services/) ----

    link = None  # the link session (services.link.Link) while the board has one
    hung = ()  # names of service tasks a simulation hangs (scenario event `hang`)
    sup_late_max_ms = 0  # most a supervisor step came later than one period after the last

    def config_errors(self, held):
        """Problems of a full set of held ints on this board (a config over the link)."""
        return board_errors(self.board, held)

    def services(self):
        """Task makers of the board-side services: the link, where the board data names
        a link UART (``services.link_service``); none otherwise."""
        from services import link_service

        return tuple(link_service.tasks(self))

    def run(self, extra_tasks=()):
        import asyncio

        async def main():
            tasks = [asyncio.create_task(self.supervise())]
            for make in self.services() + tuple(extra_tasks):
                tasks.append(asyncio.create_task(make(self)))
            await tasks[0]

        self.start()
        try:
            asyncio.run(main())
        finally:
            self.stop()
