"""Host tools for the V2G charger's real-time controller (the ``v2g`` command).

One subpackage per concern; a module imports only from the layers below its own
(``python -m v2g.build.importgraph`` checks it):

    cli                      the command table (top)
    bench                    benchmark figures gathered from every concern
    grid                     replay, PLL evaluation, sync check, conformance suite
    sim                      scenario files and runs, the virtual board, demo, plots
    board                    a board over its console: flash, config, status, logs
    build                    generators, word checker, bytecode twin, shim, mp/ runners
    common                   errors, paths, runtimes, board data (bottom)

Context: host only (CPython). Nothing in this package is copied to a board; the scripts
under ``v2g/build/mp/`` run on the MicroPython unix runtime.
"""

__version__ = "0.1.0"
