"""Benchmarks: the figures ``v2g bench`` and ``make bench`` print.

``tick`` (ns, allocations and instructions per tick: viper, bytecode twin, C reference),
``system`` (the simulated board: speed, current THD, settling, PLL figures).

May import: every subpackage below the CLI (it gathers their figures). Context: host only.
"""
