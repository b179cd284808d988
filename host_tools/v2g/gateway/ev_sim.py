"""The car for the one-machine session: Josev's EVCC simulator with a chosen initial SoC.

    python -m v2g.gateway.ev_sim [--soc-pct 10]

Josev's ``SimEVController`` starts every session at SoC 10 % with a discharge floor
(``min_soc``) of 30 %, and raises its SoC by ``100 / chargeLoopCycle`` per charge loop.
A V2G station never discharges a car below its floor, so with that car the first loops of
every session carry 0 W and "SDP to energy flowing" measures how long the simulated car
takes to climb to its floor, not the charger. ``--soc-pct`` sets the car's SoC at plug-in
(0..100); everything else (the EVCC, its config from ``EVCC_CONFIG_PATH``, its interface
from ``NETWORK_INTERFACE``) is Josev's ``iso15118.evcc.main`` unchanged. The default, 10,
is Josev's own car.
Context: host (test and demo tool; runs in the car's network namespace).
"""

import argparse
import asyncio
import sys


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m v2g.gateway.ev_sim",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--soc-pct", type=int, default=10,
                    help="the car's state of charge at plug-in, %% (0..100; default 10)")
    args = ap.parse_args(argv)
    if not 0 <= args.soc_pct <= 100:
        ap.error("--soc-pct: %d is outside 0..100" % args.soc_pct)
    return args


async def _main(soc_pct):
    from iso15118.evcc import Config, EVCCHandler
    from iso15118.evcc.controller.simulator import SimEVController
    from iso15118.evcc.evcc_config import load_from_file
    from iso15118.shared.exificient_exi_codec import ExificientEXICodec

    config = Config()
    config.load_envs()
    evcc_config = await load_from_file(config.ev_config_file_path)
    car = SimEVController(evcc_config)
    car._soc = soc_pct  # Josev's simulator keeps its SoC here (10 at construction)
    await EVCCHandler(evcc_config=evcc_config, iface=config.iface,
                      exi_codec=ExificientEXICodec(), ev_controller=car).start()


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(_main(args.soc_pct))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
