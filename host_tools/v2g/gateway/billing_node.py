"""STAND-IN daemon for billing: the stand-in board's records -> outbox -> MQTT publisher.

``python -m v2g.gateway.billing_node --config CONFIG.yaml --records N [--rate HZ]``

What the real daemon will do with the board's ENERGY_RECORD messages, driven instead by
``record_source.ProfileSource`` (clearly a stand-in until the board journal lands):
store each record durably in the outbox, "ack" it to the board (here: move on), wake the
publisher. On start it resumes like a board whose unacked records are replayed: from a few
records below the highest one the outbox holds (``--replay``), which the outbox reports as
``exists``. It exits 0 when the ledger has acked all N records (``energy/ack``), 1 on
``--timeout``; SIGTERM stops it. The last stdout line is a JSON summary.

``--stored-log FILE`` appends ``seq stored_ms`` per new record (latency figures in tests).

Context: host (tests, ``make billing-demo``).
"""

import argparse
import asyncio
import json
import logging
import signal
import sys
import time

from v2g.common.errors import UsageError
from v2g.gateway import billing_config
from v2g.gateway.mqtt_publisher import Publisher
from v2g.gateway.outbox import Outbox
from v2g.gateway.record_source import ProfileSource
from v2g.gateway.signing import make_signer


async def _main(args):
    cfg = billing_config.load(args.config)
    signer = make_signer(cfg.signing_key, cfg.station)
    outbox = Outbox(cfg.outbox, signer)
    source = ProfileSource(cfg.station, args.records, fw=args.fw)
    pub = Publisher(cfg, outbox, fw=args.fw, seed=args.seed)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, pub.stop)
    stored_log = open(args.stored_log, "a") if args.stored_log else None
    outcomes = {"new": 0, "exists": 0, "conflict": 0}

    async def produce():
        start = max(1, outbox.max_seq(cfg.station) - args.replay + 1)
        for k in range(start, args.records + 1):
            outcome = outbox.store(source.record(k))
            outcomes[outcome] += 1
            if outcome == "new" and stored_log:
                stored_log.write("%d %d\n" % (k, int(time.time() * 1000)))
                stored_log.flush()
            pub.notify()
            if args.rate > 0:
                await asyncio.sleep(1.0 / args.rate)

    async def watch():
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if outbox.acked(cfg.station) >= args.records:
                return True
            await asyncio.sleep(0.05)
        return False

    run = asyncio.create_task(pub.run())
    await produce()
    done = await watch() if not pub._stop.is_set() else False
    pub.stop()
    await run
    summary = {"station": cfg.station, "records": args.records,
               "acked_seq": outbox.acked(cfg.station), "kept": outbox.unacked(cfg.station),
               "stored": outcomes, "attempts": pub.attempts, "connections": pub.connections,
               "published": pub.published, "resends": pub.resends, "done": done}
    outbox.close()
    print(json.dumps(summary), flush=True)
    return 0 if done else 1


def main(argv=None):
    p = argparse.ArgumentParser(prog="billing_node", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--records", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0, help="records per second (0: at once)")
    p.add_argument("--replay", type=int, default=3)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--fw", default="v2g-fw stand-in")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stored-log")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return asyncio.run(_main(args))
    except UsageError as e:
        print("billing_node: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
