"""``make v2g-demo``: car (Josev's EVCC simulator) + ``v2g daemon`` (link, Modbus, SECC,
mapping, OCPP client) + the firmware on the simulated board (``v2g sim board``) + CSMS
(``ocpp`` central system) on one machine (``board_rig.Rig``).

    python -m v2g.gateway.demo [--service AC_BPT|DC_BPT] [--mode dynamic|scheduled]
                               [--setpoint-w -7000] [--loops 40] [--ev-soc-pct 50]

The car runs in one network namespace, the charger (daemon and CSMS, the CSMS on that
namespace's loopback) in another, joined by a veth pair (SDP is IPv6 link-local
multicast). Needs root and iproute2; exits 2 naming what is missing. The session is shown
on stderr as it happens; the last stdout line is the CONTRACTS object
``{"mode", "ev_target_w", "exported_wh", "transaction_ended_wh", "sdp_to_energy_s"}``
plus measurements (the plant's measured export power over the board's console, charge-loop
round trip p50/p99 seen by the car, the daemon's start time and peak RSS, JVM included).
``exported_wh`` is the firmware's own energy integrator (read over the board's console,
before and after the session), ``transaction_ended_wh`` what the CSMS received. Exit 0 on
a complete session (energy exported, session ended, contactors open, TransactionEvent
Ended equal to the firmware's metered export within 0.5 %).
Context: host.
"""

import argparse
import datetime
import json
import re
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


def _sampler(rig, out, stop):
    """The plant side every ~0.3 s over the board's console (measured power, contactor,
    state, the firmware's energy integrators)."""
    while not stop.is_set():
        try:
            p = rig.plant()
            p["t"] = time.monotonic()
            out.append(p)
        except Exception:  # noqa: BLE001 - the console busy for a moment
            pass
        stop.wait(0.3)


def run(args):
    import threading

    from v2g.gateway.board_rig import Rig, RigError, rss_mb

    ok, why = netns.available()
    if not ok:
        print("error: v2g-demo %s" % why, file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="v2g-demo-"))
    result = {"mode": args.service}
    with netns.VethPair() as pair:
        say("namespaces %s (car) and %s (charger), veth %s <-> %s"
            % (pair.ns_ev, pair.ns_se, pair.if_ev, pair.if_se))
        rig = Rig(pair, tmp, setpoint_w=args.setpoint_w, csms_port=args.port, log=say,
                  station={"iso15118": {"control_mode": args.mode}})
        samples, stop = [], threading.Event()
        try:
            rig.start_board()
            say("firmware on the simulated board: console %s, link %s (enter-service delay "
                "0.2 s)" % (rig.console, rig.link))
            rig.start_csms()
            say("CSMS listening (OCPP 2.1 / 2.0.1), V2X setpoint %.0f W" % args.setpoint_w)
            start_s = rig.start_daemon()
            rss0 = rss_mb(rig.daemon.pid)
            say("daemon (link + Modbus + SECC + OCPP) ready in %.2f s (JVM included), "
                "RSS %.0f MB" % (start_s, rss0))
            before = rig.plant()
            say("board before the car: state %s, contactor %d, link %s"
                % (before["state"], before["contactor"], before["link"]))
            threading.Thread(target=_sampler, args=(rig, samples, stop), daemon=True).start()
            rig.start_ev(args.service, args.loops, soc_pct=args.ev_soc_pct)
            say("car plugged in (EVCC %s, %d charge loops, SoC %d %%, floor 30 %%)"
                % (args.service, args.loops, args.ev_soc_pct))
            rig.wait_event("session_ended", 240, what="the end of the session")
            rig.wait_event("tx_ended", 30, what="TransactionEvent Ended")
            rig.wait_event("contactors_open", 10, what="the contactors open")
            time.sleep(0.5)
            stop.set()
            after = rig.plant()
            rss = rss_mb(rig.daemon.pid)
            rig.stop_ev()  # unplug: Josev's car stays up after a normal SessionStop
            st = rig.status()
            rec = rig.csms_record()
        except RigError as e:
            say("FAILED: %s" % e)
            stop.set()
            rig.close()
            print(json.dumps(dict(result, error=str(e)[:2000], logs=str(tmp))))
            return 1
        finally:
            stop.set()
            rig.close()
    events = rig.events
    t = {}
    for e in events:
        t.setdefault(e["event"], e["t"])
    targets = [e["target_w"] for e in events if e["event"] == "charge_loop"]
    distinct = []
    for x in targets:
        if x not in distinct:
            distinct.append(x)
    exported_wh = round(after["export_wh"] - before["export_wh"], 3)
    txs = list(rec.get("transactions", {}).values())
    ended = [x for x in txs if x["events"] and x["events"][-1] == "Ended"]
    tx_wh = ended[-1].get("export_wh") if ended else None
    rtts = loop_rtts_ms(rig.ev_log(), args.service)
    # steady export at the plant: samples with the contactor closed and the command at
    # the setpoint (after the car's SoC floor was passed)
    steady = [s["p_w"] for s in samples if s["contactor"] == 2 and s["p_w"] < -0.5 *
              abs(args.setpoint_w)]
    p_mean = sum(steady) / len(steady) if steady else None
    floor_i = targets.index(args.setpoint_w) if args.setpoint_w in targets else None
    result.update({
        "ev_target_w": distinct, "exported_wh": exported_wh, "transaction_ended_wh": tx_wh,
        "sdp_to_energy_s": round(t["energy"] - t["sdp"], 3) if "energy" in t and "sdp" in t
        else None,
        "control_mode": args.mode,
        "sdp_to_power_delivery_s": round(t["energy_start"] - t["sdp"], 3)
        if "energy_start" in t and "sdp" in t else None,
        "plant_export_w_mean": round(p_mean, 1) if p_mean is not None else None,
        "plant_export_err_pct": round(100 * abs(abs(p_mean) - abs(args.setpoint_w))
                                      / abs(args.setpoint_w), 3) if p_mean else None,
        "plant_samples": len(steady),
        "energy_diff_pct": round(100 * abs(tx_wh - exported_wh) / exported_wh, 3)
        if tx_wh is not None and exported_wh > 0 else None,
        "target_after_floor_all_setpoint": floor_i is not None and all(
            x == args.setpoint_w for x in targets[floor_i:]),
        "loop_rtt_ms_p50": _pct(rtts, 0.5), "loop_rtt_ms_p99": _pct(rtts, 0.99),
        "loops": len(rtts), "daemon_start_s": round(start_s, 2),
        "daemon_rss_mb": round(max(rss0, rss), 1),
        "board_after": {"state": after["state"], "contactor": after["contactor"]},
        "link": st.get("link", {}).get("state"),
        "ocpp_version": (rec.get("versions") or [None])[0],
        "ocpp_duplicates_dropped": rec.get("duplicates"),
        "csms_profiles": rec.get("profiles"), "logs": str(tmp)})
    say("plant: export %.1f W mean over %d samples; firmware metered %.3f Wh, "
        "TransactionEvent Ended %s Wh; contactor after: %d"
        % (p_mean or 0, len(steady), exported_wh, tx_wh, after["contactor"]))
    complete = (exported_wh > 0 and tx_wh is not None and "session_ended" in t
                and abs(tx_wh - exported_wh) <= 0.005 * exported_wh
                and after["contactor"] == 1)
    print(json.dumps(result))
    return 0 if complete else 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m v2g.gateway.demo")
    ap.add_argument("--service", choices=("AC_BPT", "DC_BPT"), default="AC_BPT")
    ap.add_argument("--mode", choices=("dynamic", "scheduled"), default=None)
    ap.add_argument("--setpoint-w", type=float, default=-7000.0)
    ap.add_argument("--loops", type=int, default=40)
    ap.add_argument("--ev-soc-pct", type=int, default=50,
                    help="the car's SoC at plug-in, %% (default 50: above its 30 %% floor, so "
                    "energy flows from the first charge loop; 10 is Josev's own car)")
    ap.add_argument("--port", type=int, default=9000)
    args = ap.parse_args(argv)
    if not 0 <= args.ev_soc_pct <= 100:
        ap.error("--ev-soc-pct: %d is outside 0..100" % args.ev_soc_pct)
    if args.mode is None:
        args.mode = "dynamic" if args.service == "AC_BPT" else "scheduled"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
