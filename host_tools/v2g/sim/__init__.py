"""The simulated board as the host drives it.

``scenario`` (scenario files: validation, normalisation), ``runner`` (scenario mode:
simulated time, deterministic, result and trace files), ``simboard`` (board mode: real
time, REPL on a pseudo-terminal), ``demo`` (what ``make sim`` runs), ``plot`` and
``analysis`` (traces), ``mpycache`` (precompiled modules for simulation runs),
``command`` (the ``v2g sim`` command). The board side lives in ``boards/sim/``.

May import: ``v2g.common``, ``v2g.build``, ``v2g.board``. Context: host only.
"""
