"""Board mode of the simulated board: the real-time tick pump and the REPL task.

``hal.extra_tasks()`` returns ``tasks(sim_hal)``: two makers ``make(app) -> coroutine``
that ``App.run`` starts beside the supervisor. The HAL object is handed in (this module
does not import ``hal``, which imports it).

- ``pump``: every ``PASS_MS`` of wall time (``asyncio.sleep_ms``) it runs every tick due
  since the last pass, in 1 ms batches of ``tick_hz // 1000`` ticks: the tick handler,
  then the plant's ``advance(pw, pwm_on)`` per tick, then the plant's ``slow(1)`` and the
  simulated clock per millisecond (the same order as the scenario runner). A pass every
  10 ms, one supervisor period, instead of every 1 ms: the same ticks for 20-35 % less
  CPU (measured side by side in the site bench, 2 boards); the other tasks see the
  simulated clock move in steps of ~10 ms, as they see a board's clock between their own
  10 ms periods. Simulated time is locked to the wall clock; after a stall (a blocking
  REPL command, the host descheduling us) it catches up at most ``CATCHUP_MAX_MS`` and
  the rest is counted in ``stats["slipped_ms"]``, so a stall never snowballs. The
  watchdog counts simulated time (``hal.wdt_expired``): a stalled board does not bite, a
  hung supervisor does: the board then resets with ``RESET_WDT``.
- ``repl``: ``async_repl.Repl`` on stdin/stdout, in a namespace holding ``_app`` (the
  running ``App``, as ``main.py``'s globals would on a board) and ``reset()``.

Resets leave the process with an exit code (``async_repl.RESET_*``); ``v2g sim board``
starts the board again on the same flash directory and passes the reset cause in
``V2G_RESET_CAUSE`` ("power", "soft", "wdt"), which ``tasks()`` hands to the HAL.

Cost (unix runtime, x64 at 2 GHz, 10 kHz): one millisecond of simulated time is 10 ticks
(~1.7 us each) with the plant's per-tick step (~1.2 us) and its slow part (~13 us), ~42 us;
with the supervisor, the link and the REPL the board process takes ~10 % of one core
while energized behind a daemon (it took ~12-16 % with a pass every 1 ms).
Context: simulated board in board mode only (MicroPython unix runtime), asyncio tasks.
"""

import asyncio
import json
import os
import time

import async_repl
import scenario_events

CATCHUP_MAX_MS = 50  # longest stretch of simulated time run in one pass after a stall
PASS_MS = 10  # wall time between pump passes (one supervisor period)

# pump figures for status tools: simulated ms run, ms skipped after stalls, largest pass
stats = {"sim_ms": 0, "slipped_ms": 0, "batch_max_ms": 0, "passes": 0}

_hal = None  # the running SimHal, handed over by tasks()


def reset(code=async_repl.RESET_HARD):
    """Restart the board (outputs safe first); ``v2g sim board`` starts main.py again."""
    if _hal is not None:
        _hal.pwm_off()
        _hal.contactor(0, 0)
    raise SystemExit(code)


def _scenario():
    """The normalised scenario ``v2g sim board --scenario`` handed over, or None. Board
    mode plays its initial conditions and events in real time from boot; its device
    config is whatever the board's flash holds (``v2g sim demo`` writes it there)."""
    path = os.getenv("V2G_SCENARIO")
    if not path:
        return None
    with open(path) as f:
        return json.load(f)


def _hang(app, target):
    if target == "tick":
        app.hal.tick_fn = None
    elif target == "supervisor":
        app.supervise_once = lambda now_ms: None
    else:  # a service task by name (e.g. "link": it stops reading and sending)
        app.hung = tuple(app.hung) + (target,)


async def pump(app):
    h = app.hal
    tick_hz = app.board["tick_hz"]
    per_ms = tick_hz // 1000
    plant = h.plant
    step, plant_st, plant_tab = plant.stepper()
    on = h.io_pwm_on
    slow = plant.slow
    n = h.t_us * tick_hz // 1000000  # ticks run so far (simulated time)
    sc = _scenario()
    timeline = []
    if sc is not None:
        init = sc["initial"]
        plant.event({"v_pu": init["v_pu"], "f_hz": init["f_hz"], "ambient_c": init["ambient_c"]})
        timeline = [(int(ev["t_s"] * 1000), ev) for ev in sc["events"]]
    t0_ms = n * 1000 // tick_hz
    last = time.ticks_ms()
    while True:
        now = time.ticks_ms()
        owed = time.ticks_diff(now, last)
        last = now
        if owed > CATCHUP_MAX_MS:
            stats["slipped_ms"] += owed - CATCHUP_MAX_MS
            owed = CATCHUP_MAX_MS
        if owed > stats["batch_max_ms"]:
            stats["batch_max_ms"] = owed
        for _ in range(owed):
            while timeline and timeline[0][0] <= n * 1000 // tick_hz - t0_ms:
                target = scenario_events.apply(timeline.pop(0)[1], app, plant)
                if target:
                    _hang(app, target)
            fn = h.tick_fn
            io = h.io
            for _ in range(per_ms):
                if fn is not None:
                    fn(None)
                step(plant_st, plant_tab, io, io[on])
            n += per_ms
            slow(1)
            h.t_us = n * 1000000 // tick_hz
        stats["sim_ms"] += owed
        stats["passes"] += 1
        if h.wdt_expired():
            print("sim board: watchdog reset (supervisor stopped feeding it)")
            reset(async_repl.RESET_WDT)
        await asyncio.sleep_ms(PASS_MS)


async def repl(app):
    ns = {"__name__": "__main__", "_app": app, "reset": reset}
    # production lockdown (services/lockdown.py sets app.locked): the console is drained
    await async_repl.Repl(ns, raw=False, locked=getattr(app, "locked", False)).run()


def tasks(sim_hal):
    """Task makers for ``App.run``; also hands the reset cause to the HAL object."""
    global _hal
    _hal = sim_hal
    cause = os.getenv("V2G_RESET_CAUSE")
    if cause and sim_hal is not None:
        sim_hal.cause = cause
    return (pump, repl)
