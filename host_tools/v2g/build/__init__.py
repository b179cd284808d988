"""Code generators, checkers and the pieces that run firmware outside a board.

``gen_tables`` (integer sine/CORDIC tables), ``gen_tick`` (the fused interrupt body),
``wordcheck`` (32-bit word semantics of viper code on worst-case inputs),
``bytecode_twin`` (the firmware without viper, for comparison), the CPython stand-in
``micropython`` module (``shim/``) and the scripts that run ON the MicroPython unix runtime
(``mp/``: tick harness, fuzz, replay and power-cut runners).

May import: ``v2g.common``. Context: host only (``mp/`` scripts run on MicroPython).
"""
