"""The grid as the controller sees it: measurement, synchronisation and conformance.

``replay`` (recorded waveforms through the firmware's own PLL), ``pll_eval`` (signals and
PLL figures), ``sync_check`` (``v2g sync-check --test-grid``), ``conformance`` and
``conformance_tests`` (IEEE 1547.1-style suite on the simulated board).

May import: ``v2g.common``, ``v2g.build``, ``v2g.board``, ``v2g.sim``. Context: host only.
"""
