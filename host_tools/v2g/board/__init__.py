"""Talking to a board over its USB/serial console (real or the virtual board's pty).

``console`` (``BoardLink``: mpremote's serial transport as a library, raw REPL, files),
``flash`` (compile with mpy-cross, copy what changed, verify, switch, restart), ``config``
(``v2g config push|show|pull``), ``status`` (``v2g status``, ``v2g repl``), ``logs``
(``v2g logs``: the event log as protocol-log lines).

May import: ``v2g.common``, ``v2g.build``. Context: host only.
"""
