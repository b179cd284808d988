"""The ``v2g`` command: host tools for the V2G charger's real-time controller.

Subcommands live in a command table, in the style of mpremote's ``_COMMANDS``:
``name -> (handler, help, add_arguments)``. A handler takes the parsed ``args`` and
returns an exit code (None = 0). Errors:

- ``UsageError`` (bad input): ``v2g <cmd>: error: <message>`` on stderr, exit 2;
- ``ToolError`` (a failure that is not the input's fault): same format, exit 1;
- argparse's own errors exit 2 as usual.

Context: host only.
"""

import argparse
import sys

from v2g import __version__
from v2g.backend import demo as billing_demo
from v2g.backend import ledger, sems
from v2g.bench import tick as bench
from v2g.board import config as config_cmd
from v2g.board import flash, logs, status
from v2g.common.errors import ToolError, UsageError
from v2g.gateway import check_tls_cmd, daemon, modbus_cmd
from v2g.grid import conformance, replay, sync_check
from v2g.sim import command as sim
from v2g.update import command as update_cmd
from v2g.update import keys, sign

# name -> (handler, one-line help, function adding the subcommand's arguments)
_COMMANDS = {
    "replay": (
        replay.run,
        "feed recorded three-phase voltages (CSV) through the firmware's own PLL",
        replay.add_arguments,
    ),
    "bench": (
        bench.run,
        "print the firmware hot-path benchmarks",
        bench.add_arguments,
    ),
    "sim": (
        sim.run,
        "run the firmware on the simulated board: 'sim run' (scenario) or 'sim board'",
        sim.add_arguments,
    ),
    "flash": (
        flash.run,
        "copy the firmware and a board's files to a board (only what changed), then restart it",
        flash.add_arguments,
    ),
    "config": (
        config_cmd.run,
        "device config on a board: 'config push FILE.yaml', 'config show', 'config pull'",
        config_cmd.add_arguments,
    ),
    "status": (
        status.run,
        "state, faults, PLL, power, contactor and tick figures of a running board",
        status.add_arguments,
    ),
    "repl": (
        status.run_repl,
        "the board's REPL in this terminal (mpremote connect PORT resume repl)",
        status.add_repl_arguments,
    ),
    "conformance": (
        conformance.run,
        "IEEE 1547.1-style conformance tests on the simulated board; writes a report",
        conformance.add_arguments,
    ),
    "sync-check": (
        sync_check.run,
        "measure the grid the controller sees and judge synchronisation (PASS/FAIL)",
        sync_check.add_arguments,
    ),
    # signed updates (v2g.update)
    "keys": (keys.run, "Ed25519 signing keys: 'keys new --out DIR', 'keys install'",
             keys.add_arguments),
    "sign": (sign.run, "build a signed update bundle for a board", sign.add_arguments),
    "sign-config": (sign.run_config, "sign a device config (e.g. production=0 to unlock)",
                    sign.add_config_arguments),
    "update": (update_cmd.run, "send a signed bundle to a board and start it (A/B, trial)",
               update_cmd.add_arguments),
    "logs": (
        logs.run,
        "the board's persistent event log as protocol-log lines (--follow, --out FILE)",
        logs.add_arguments,
    ),
    "daemon": (
        daemon.run,
        "v2g-daemon: the link to the controller and the SunSpec Modbus TCP server",
        daemon.add_arguments,
    ),
    "modbus": (
        modbus_cmd.run,
        "Modbus TCP client: 'modbus read|write|scan|map' (SunSpec via pysunspec2)",
        modbus_cmd.add_arguments,
    ),
    "sems": (
        sems.run,
        "site energy manager: 'sems run --site FILE' (HA: several instances), 'sems status'",
        sems.add_arguments,
    ),
    "ledger": (
        ledger.run,
        "the back-end energy ledger: report (--db FILE [--json]) or 'ledger serve'",
        ledger.add_arguments,
    ),
    "check-tls": (
        check_tls_cmd.run,
        "TLS 1.3 handshake to the billing broker with the daemon's certificates",
        check_tls_cmd.add_arguments,
    ),
    "billing-demo": (
        billing_demo.run,
        "the billing chain: firmware board, daemon, MQTT over TLS 1.3, ledger",
        billing_demo.add_arguments,
    ),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="v2g",
        description="Host tools for the V2G EV charger's real-time controller "
                    "(MicroPython firmware).",
    )
    parser.add_argument("--version", action="version", version="v2g " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (handler, help_text, add_arguments) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_handler=handler)
    return parser


def main(argv=None):
    """Entry point of the ``v2g`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:     # --help, --version, argparse usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        rc = args._handler(args)
    except UsageError as e:
        print("v2g %s: error: %s" % (args.command, e), file=sys.stderr)
        return 2
    except ToolError as e:
        print("v2g %s: error: %s" % (args.command, e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("v2g %s: interrupted" % args.command, file=sys.stderr)
        return 130
    return 0 if rc is None else rc


if __name__ == "__main__":
    sys.exit(main())
