"""``make v2g-demo``: car (Josev's EVCC simulator) + daemon (SECC, mapping, OCPP client,
firmware stand-in) + CSMS (``ocpp`` central system) on one machine.

    python -m v2g.gateway.demo [--service AC_BPT|DC_BPT] [--mode dynamic|scheduled]
                               [--setpoint-w -7000] [--loops 20]

The car runs in one network namespace, the charger (daemon and CSMS, the CSMS on that
namespace's loopback) in another, joined by a veth pair (SDP is IPv6 link-local
multicast). Needs root and iproute2; exits 2 naming what is missing. The session is shown
on stderr as it happens; the last stdout line is the CONTRACTS object
``{"mode", "ev_target_w", "exported_wh", "transaction_ended_wh", "sdp_to_energy_s"}``
plus measurements (charge-loop round trip p50/p99 seen by the car, the daemon's start time
and peak RSS, JVM included). Exit 0 on a complete session (energy exported, session
ended, TransactionEvent Ended equal to the firmware's metered export within 0.5 %).
Context: host.
"""

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v2g.gateway import netns

HOST_TOOLS = Path(__file__).resolve().parents[2]
LOG_TS = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def _rss_mb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _tree_rss_mb(pid):
    """RSS of ``pid`` and its children (the JVM runs inside the Python process via py4j's
    gateway: a child process)."""
    total = _rss_mb(pid)
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                             text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    return total + sum(_tree_rss_mb(int(c)) for c in out)


def loop_rtts_ms(ev_log, service):
    """Charge-loop round trips seen by the car: 'Sent X_ChargeLoopReq' -> 'X_ChargeLoopRes
    received' (Josev's log timestamps, ms)."""
    kind = "AC" if service.startswith("AC") else "DC"
    sent, out = None, []
    for line in ev_log.splitlines():
        m = LOG_TS.search(line)
        if not m:
            continue
        t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if "Sent %s_ChargeLoopReq" % kind in line:
            sent = t
        elif "%s_ChargeLoopRes received" % kind in line and sent is not None:
            out.append((t - sent) * 1000.0)
            sent = None
    return out


def _pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 1)


def say(msg):
    print("[v2g-demo] %s" % msg, file=sys.stderr, flush=True)


def run(args):
    ok, why = netns.available()
    if not ok:
        print("error: v2g-demo %s" % why, file=sys.stderr)
        return 2
    import iso15118

    tmp = Path(tempfile.mkdtemp(prefix="v2g-demo-"))
    env = dict(os.environ, PYTHONPATH=str(HOST_TOOLS), MESSAGE_LOG_JSON="False")
    ex_dir = Path(iso15118.__file__).parent / "shared/examples/evcc/iso15118_20"
    ev_cfg = json.loads((ex_dir / ("evcc_config_%s.json" % args.service.lower())).read_text())
    ev_cfg["chargeLoopCycle"] = args.loops
    (tmp / "ev.json").write_text(json.dumps(ev_cfg))
    (tmp / "station.json").write_text(json.dumps({
        "iso15118": {"control_mode": args.mode},
        "ocpp": {"url": "ws://127.0.0.1:%d" % args.port, "meter_interval_s": 1.0}}))
    result = {"mode": args.service}
    with netns.VethPair() as pair:
        say("namespaces %s (car) and %s (charger), veth %s <-> %s"
            % (pair.ns_ev, pair.ns_se, pair.if_ev, pair.if_se))
        csms = subprocess.Popen(pair.exec_argv("se", [
            sys.executable, "-m", "v2g.gateway.csms", "--port", str(args.port),
            "--setpoint-w", str(args.setpoint_w), "--out", str(tmp / "csms.json")]),
            stdout=subprocess.PIPE, text=True, env=env)
        csms.stdout.readline()
        say("CSMS listening (OCPP 2.1 / 2.0.1), V2X setpoint %.0f W" % args.setpoint_w)
        t0 = time.monotonic()
        err = open(tmp / "daemon.log", "w")
        st = subprocess.Popen(pair.exec_argv("se", [
            sys.executable, "-m", "v2g.gateway.station", "--iface", pair.if_se, "--config",
            str(tmp / "station.json"), "--timeout-s", "90"]),
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=tmp)
        events = []
        for line in st.stdout:
            if line.startswith("{"):
                events.append(json.loads(line))
                if events[-1]["event"] == "ready":
                    break
        start_s = time.monotonic() - t0
        rss0 = _tree_rss_mb(st.pid)
        say("daemon ready in %.2f s (JVM included), RSS %.0f MB" % (start_s, rss0))
        ev = subprocess.Popen(pair.exec_argv("ev", [sys.executable, "-m",
                                                    "iso15118.evcc.main"]),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=dict(env, NETWORK_INTERFACE=pair.if_ev,
                                       EVCC_CONFIG_PATH=str(tmp / "ev.json")), cwd=tmp)
        say("car plugged in (EVCC %s)" % args.service)
        rss_peak = rss0
        for line in st.stdout:
            if not line.startswith("{"):
                continue
            e = json.loads(line)
            events.append(e)
            k = e["event"]
            if k == "charge_loop":
                rss_peak = max(rss_peak, _tree_rss_mb(st.pid))
                say("charge loop: EV target %+.0f W, plant %+.0f W"
                    % (e["target_w"], e.get("plant_w", 0)))
            elif k != "summary":
                say("%s %s" % (k, {x: y for x, y in e.items() if x not in ("t", "event")}))
        st.wait(timeout=30)
        err.close()
        ev_log = ev.communicate(timeout=60)[0]
        (tmp / "ev.log").write_text(ev_log)
        csms.send_signal(signal.SIGTERM)
        csms.wait(timeout=15)
    rec = json.loads((tmp / "csms.json").read_text())
    summary = events[-1] if events and events[-1]["event"] == "summary" else {}
    t = {e["event"]: e["t"] for e in reversed(events)}
    distinct = []
    for x in summary.get("ev_targets", []):
        if x not in distinct:
            distinct.append(x)
    exported_wh = round(summary.get("exported_mwh", 0.0) / 1000.0, 3)
    txs = list(rec.get("transactions", {}).values())
    ended = [x for x in txs if x["events"] and x["events"][-1] == "Ended"]
    tx_wh = ended[-1].get("export_wh") if ended else None
    rtts = loop_rtts_ms(ev_log, args.service)
    result.update({
        "ev_target_w": distinct, "exported_wh": exported_wh, "transaction_ended_wh": tx_wh,
        "sdp_to_energy_s": round(t["energy"] - t["sdp"], 3) if "energy" in t and "sdp" in t
        else None,
        "control_mode": args.mode,
        "sdp_to_power_delivery_s": round(t["energy_start"] - t["sdp"], 3)
        if "energy_start" in t and "sdp" in t else None,
        "loop_rtt_ms_p50": _pct(rtts, 0.5), "loop_rtt_ms_p99": _pct(rtts, 0.99),
        "loops": len(rtts), "daemon_start_s": round(start_s, 2),
        "daemon_rss_mb": round(rss_peak, 1), "ocpp_version": (rec.get("versions") or [None])[0],
        "ocpp_duplicates_dropped": rec.get("duplicates"),
        "csms_profiles": rec.get("profiles"), "logs": str(tmp)})
    complete = (exported_wh > 0 and tx_wh is not None and "session_ended" in t
                and abs(tx_wh - exported_wh) <= 0.005 * exported_wh)
    print(json.dumps(result))
    return 0 if complete else 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m v2g.gateway.demo")
    ap.add_argument("--service", choices=("AC_BPT", "DC_BPT"), default="AC_BPT")
    ap.add_argument("--mode", choices=("dynamic", "scheduled"), default=None)
    ap.add_argument("--setpoint-w", type=float, default=-7000.0)
    ap.add_argument("--loops", type=int, default=20)
    ap.add_argument("--port", type=int, default=9000)
    args = ap.parse_args(argv)
    if args.mode is None:
        args.mode = "dynamic" if args.service == "AC_BPT" else "scheduled"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
