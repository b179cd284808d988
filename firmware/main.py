"""Board entry point: boot the controller and run it (see app.py for the order).

The board's HAL may add asyncio tasks of its own through ``hal.extra_tasks()`` (the
simulated board adds its real-time tick pump and the REPL task there).

Signed updates (``bootslot``, ``services/update.py``): the board data comes from the tree
``boot.py`` chose; the update service journals why the boot chose it and confirms a tree
that runs in trial. A trial tree that fails to start records why and resets: the next
boot runs the previous tree. Production lockdown (``services/lockdown.py``): no Ctrl-C,
no REPL; an exception that escapes resets the board instead of leaving it at a REPL.
Context: runs at power-up.
"""

import bootslot

_locked = False
try:
    import app
    import hal

    _app = app.App(hal, app.load_board(bootslot.path("board.json")))
    _tasks = tuple(hal.extra_tasks()) if hasattr(hal, "extra_tasks") else ()
    try:
        from services import lockdown, update
    except ImportError:  # a tree without the services package: no updates, no lockdown
        update = lockdown = None
    if update is not None:
        _tasks += (update.attach(_app),)
        _locked = lockdown.apply(_app)
    _app.run(_tasks)
except Exception as _e:
    try:
        import hal

        hal.safe_outputs()
    finally:
        if bootslot.in_trial() or _locked:
            bootslot.trial_failed("start failed: %r" % (_e,))
            import machine

            machine.reset()
    raise
