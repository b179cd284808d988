"""``make billing-demo`` / ``v2g billing-demo``: the real billing chain on one machine.

``v2g sim board`` (the firmware: meter, energy journal, link) -> a relay on its link pty
-> ``v2g daemon`` (outbox, Ed25519 signing, Publisher) -> a lossy loopback proxy
(``--loss``, default 2 %) -> mosquitto with TLS 1.3 and client certificates on
127.0.0.1:8883 (``--port``) -> ``v2g ledger serve``. The board runs a short export session
(``--seconds`` at ``--export-w``, records every 2 s); when the session has ended and the
ledger has acked the journal's last record, the demo prints the ledger report and as the
last stdout line the CONTRACTS JSON::

    {"metered_wh_export": M, "credited_wh_export": C, "records": N,
     "duplicates_suppressed": D, "gaps": G}

M is the firmware's own metered export (its meter, read over the REPL). Exit 0 only when C
equals M within 0.5 % and G is 0. Files in ``out/billing-demo/``.

Context: host.
"""

import json
import os
import shutil
import time

from v2g.backend.broker import mosquitto_exe, wait_port
from v2g.backend.chain import STATION, Chain
from v2g.backend.ledger import format_report
from v2g.common import paths
from v2g.common.errors import ToolError


def add_arguments(p):
    p.add_argument("--seconds", type=float, default=20.0, help="export session, s (20)")
    p.add_argument("--export-w", type=int, default=7000, help="export power, W (7000)")
    p.add_argument("--loss", type=float, default=0.02, help="proxy loss, default 0.02")
    p.add_argument("--link-loss", type=float, default=0.0, help="link frame loss (0)")
    p.add_argument("--port", type=int, default=8883, help="broker port on 127.0.0.1")
    p.add_argument("--out", default=str(paths.REPO_ROOT / "out" / "billing-demo"))


def run(args):
    if mosquitto_exe() is None:
        raise ToolError("mosquitto is not installed (Debian package; `make tools` installs it)")
    if wait_port(args.port, timeout=0.2):
        raise ToolError("127.0.0.1:%d is in use; pick another --port" % args.port)
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    t0 = time.monotonic()
    chain = Chain(args.out, port=args.port, proxy_loss=args.loss, link_loss=args.link_loss,
                  export_w=-abs(args.export_w), session_s=args.seconds)
    try:
        chain.start()
        print("billing-demo: v2g sim board (firmware) -> link relay -> v2g daemon -> TLS 1.3 "
              "127.0.0.1:%d via lossy proxy (loss %.1f %%) -> mosquitto -> ledger"
              % (args.port, args.loss * 100), flush=True)
        st, totals = chain.wait_done(timeout_s=args.seconds + 150)
        chain.bed.stop_ledger()
        print("board journal: %s" % json.dumps(st), flush=True)
        rep = chain.bed.report()
        print(format_report({"stations": rep}), flush=True)
    finally:
        chain.close()
    m = totals[1] / 1000.0
    s = rep.get(STATION, {"credited_wh_export": 0.0, "records": 0,
                          "duplicates_suppressed": 0, "gaps": []})
    c = s["credited_wh_export"]
    out = {"metered_wh_export": round(m, 3), "credited_wh_export": round(c, 3),
           "records": s["records"], "duplicates_suppressed": s["duplicates_suppressed"],
           "gaps": len(s["gaps"]), "elapsed_s": round(time.monotonic() - t0, 2)}
    print(json.dumps(out), flush=True)
    ok = m > 0 and abs(c - m) <= 0.005 * m and not s["gaps"]
    return 0 if ok else 1
