"""Board entry point: boot the controller and run it (see app.py for the order).

The board's HAL may add asyncio tasks of its own through ``hal.extra_tasks()`` (the
simulated board adds its real-time tick pump and the REPL task there).
Context: runs at power-up.
"""

import app
import hal

_app = app.App(hal, app.load_board())
_app.run(hal.extra_tasks() if hasattr(hal, "extra_tasks") else ())
