"""``make billing-demo`` / ``v2g billing-demo``: the billing chain on one machine, host only.

STAND-IN board: ``v2g.gateway.record_source`` generates the records of a short export
session (until the board's energy journal lands); a stand-in daemon process stores them in
its SQLite outbox, signs them and publishes them over TLS 1.3 with a client certificate
through a lossy loopback proxy (``--loss``, default 2 %) to mosquitto on 127.0.0.1:8883
(``--port``); ``v2g ledger serve`` credits them and acks. Prints progress, the ledger
report, and as the last stdout line the CONTRACTS JSON::

    {"metered_wh_export": M, "credited_wh_export": C, "records": N,
     "duplicates_suppressed": D, "gaps": G}

Exit 0 only when C equals M within 0.5 % and G is 0. Files in ``out/billing-demo/``.

Context: host.
"""

import json
import os
import shutil
import time

from v2g.backend.broker import mosquitto_exe, wait_port
from v2g.backend.ledger import format_report
from v2g.backend.testbed import Testbed
from v2g.common import paths
from v2g.common.errors import ToolError
from v2g.gateway.record_source import ProfileSource

STATION = "ST-0001"


def add_arguments(p):
    p.add_argument("--records", type=int, default=120,
                   help="records in the session (minute intervals), default 120")
    p.add_argument("--loss", type=float, default=0.02, help="proxy loss, default 0.02")
    p.add_argument("--port", type=int, default=8883, help="broker port on 127.0.0.1")
    p.add_argument("--rate", type=float, default=100.0, help="records per second")
    p.add_argument("--out", default=str(paths.REPO_ROOT / "out" / "billing-demo"))


def run(args):
    if mosquitto_exe() is None:
        raise ToolError("mosquitto is not installed (Debian package; `make tools` installs it)")
    if wait_port(args.port, timeout=0.2):
        raise ToolError("127.0.0.1:%d is in use; pick another --port" % args.port)
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    bed = Testbed(args.out, port=args.port, stations=(STATION,))
    t0 = time.monotonic()
    try:
        bed.start_broker()
        bed.start_proxy(args.loss, seed=1)
        bed.start_ledger()
        bed.wait_ledger()
        print("billing-demo: STAND-IN board (generated records) -> outbox -> TLS 1.3 "
              "127.0.0.1:%d via lossy proxy (loss %.1f %%) -> mosquitto -> ledger"
              % (args.port, args.loss * 100), flush=True)
        node = bed.start_node(bed.node_config(STATION), args.records, rate=args.rate,
                              timeout=120.0)
        rc, summary = bed.node_result(node, timeout=180)
        bed.wait_acked(STATION, args.records, timeout=10)
        bed.stop_ledger()
        print("daemon stand-in: %s" % json.dumps(summary), flush=True)
        print("proxy: %s" % json.dumps(bed.proxy.stats), flush=True)
        rep = bed.report()
        print(format_report({"stations": rep}), flush=True)
    finally:
        bed.close()
    metered = ProfileSource(STATION, args.records).metered()
    st = rep.get(STATION, {"credited_wh_export": 0.0, "records": 0,
                           "duplicates_suppressed": 0, "gaps": []})
    m, c = metered["wh_export"], st["credited_wh_export"]
    out = {"metered_wh_export": round(m, 3), "credited_wh_export": round(c, 3),
           "records": st["records"], "duplicates_suppressed": st["duplicates_suppressed"],
           "gaps": len(st["gaps"]), "elapsed_s": round(time.monotonic() - t0, 2)}
    print(json.dumps(out), flush=True)
    ok = m > 0 and abs(c - m) <= 0.005 * m and not st["gaps"]
    return 0 if ok and rc == 0 else 1
