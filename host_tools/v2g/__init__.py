"""Host tools for the V2G charger's real-time controller (the ``v2g`` command).

Context: host only (CPython). Nothing in this package is copied to a board, except
the MicroPython runner scripts under ``v2g/mp/`` which run on the unix runtime.
"""

__version__ = "0.1.0"
