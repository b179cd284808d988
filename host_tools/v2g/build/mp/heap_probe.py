"""Heap of a booted board tree (runs ON the MicroPython unix runtime; CPython for the boot).

    micropython -X heapsize=N heap_probe.py BOARD_DIR ROOT_DIR [EVENTS]

with ``MICROPYPATH`` = firmware/ : BOARD_DIR : this folder (``v2g.heap.probe`` builds it).
Boots ``app.App`` exactly as ``main.py`` does -- the board's own ``hal.py`` (real ports:
on the permissive ``fake_hw`` stand-ins for ``machine``/``pyb``/``stm``), its
``board.json``, no ``config.json`` in ROOT_DIR (the parameter table's defaults) -- runs
the tick and the supervisor for a few periods, then adds EVENTS (default 300) faults to
the event journal (more than its capacity: the journal is full and wrapping) with the
eventlog committing them to ROOT_DIR/log. Prints one ``key value`` line each:

    start_free          gc.mem_free() before the first firmware import
    boot_free/alloc     after boot (App built, tick and supervisor run), after gc.collect()
    boot_largest        largest bytearray that could still be allocated then
    full_free/alloc     the same with the journal at capacity
    full_largest
    ok 1

``-X heapsize=N`` with N = the board's ``heap_bytes`` gives the figures the board would
show if its objects were as large as the runtime's: the 64-bit unix port's objects are
larger than a 32-bit board's (pointers, small-int words), so its figures are pessimistic;
a 32-bit unix build gives nearly exact ones. Modules are loaded from .py/.mpy into RAM
here; a board that freezes them (``boards/<name>/manifest.py``) keeps their bytecode in
flash and has more free. Context: host harness.
"""

import gc
import sys

gc.collect()
_START_FREE = gc.mem_free()

import json  # noqa: E402

_BUILTIN = set(sys.modules) | {"fake_hw", "micropython"}


def largest_block():
    """Largest bytearray the heap can hand out now (binary search, 16-byte steps)."""
    gc.collect()
    lo, hi = 0, gc.mem_free() + 16
    while hi - lo > 16:
        mid = (lo + hi) // 2
        try:
            b = bytearray(mid)
            del b
            lo = mid
        except MemoryError:
            hi = mid
        gc.collect()
    return lo


def report(tag):
    gc.collect()
    print("%s_free %d" % (tag, gc.mem_free()))
    print("%s_alloc %d" % (tag, gc.mem_alloc()))
    print("%s_largest %d" % (tag, largest_block()))


class _Micropython:
    """The unix port's micropython module lacks alloc_emergency_exception_buf (boards
    have it); everything else firmware uses at run time is the real module's."""

    def __init__(self, real):
        self.const = real.const
        self.heap_lock = real.heap_lock
        self.heap_unlock = real.heap_unlock
        self.schedule = getattr(real, "schedule", None)
        self.alloc_emergency_exception_buf = lambda size: None


def main():
    board_dir, root = sys.argv[1], sys.argv[2]
    n_events = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    with open(board_dir + "/board.json") as f:
        board = json.load(f)
    if board["port"] != "unix":
        import micropython

        import fake_hw

        fake_hw.install(board)
        if not hasattr(micropython, "alloc_emergency_exception_buf"):
            sys.modules["micropython"] = _Micropython(micropython)
    board["dev_mode"] = True  # no watchdog object on the host
    import app
    import hal

    a = app.App(hal, board, root=root + "/")
    a.start()
    hal_ = a.hal
    t_ms = 0
    for _ in range(20):  # a few supervisor periods with the tick running
        for _ in range(10):
            a.tick(None)
        a.supervise_once(t_ms)
        t_ms += 10
    a.stop() if board["port"] == "unix" else None
    print("start_free %d" % _START_FREE)
    print("ok_boot %d" % (a.ctl.stats[0] > 0))
    report("boot")
    for i in range(n_events):
        # a realistic mix: fault records with detail text, state changes without
        a.journal.fault(t_ms, "0x07", "v_min=0.%03dpu v_max=1.%03dpu f=59.%03dHz"
                        % (i % 1000, i % 997, i % 991))
        a.journal.add(t_ms, "state", "", "ENERGIZED" if i & 1 else "READY")
        t_ms += 10
        if i % 8 == 0:
            a.supervise_once(t_ms)
    a.supervise_once(t_ms + 5000)
    report("full")
    j = a.journal
    print("journal_len %d" % (len(j.items) if hasattr(j, "items") else len(j)))
    del hal_
    print("modules %s" % ",".join(sorted(k for k in sys.modules if k not in _BUILTIN)))
    print("ok 1")


main()
