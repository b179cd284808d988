"""The site on one machine: mosquitto (TLS 1.3, ACL), two or more ``v2g sems`` instances,
simulated boards running the firmware behind their daemons (``sems_boards``, ``--boards``),
station emulators for the rest (hundreds of stations per process), a utility's demand
signal, a SEMS kill; then the figures (``make sems-bench``; ``tests_host/sems`` with a
reduced site).

Last stdout line: ``{"stations", "site_limit_w", "max_over_pct", "dispatch_p99_s",
"failover_s", ...}`` (the project contract's keys, plus extra ones).

Context: host (bench, tests).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

from v2g.backend import pki
from v2g.backend.broker import Broker, free_port
from v2g.backend.sems import tls_context
from v2g.backend.sems_plan import site_limits, water_fill
from v2g.backend.sems_site import load_site
from v2g.common import paths


def _cpu_s(pid):
    """CPU seconds (user + system) of process ``pid`` so far; None where /proc has none."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(paths.REPO_ROOT / "host_tools") + os.pathsep + \
        env.get("PYTHONPATH", "")
    return env


class Utility:
    """The utility's client: publishes the demand signal, watches lease and heartbeat."""

    def __init__(self, port, ca, cert, key, site):
        self.site = site
        self.beats = []    # (wall t, holder) on every holder change
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="utility")
        self.c.tls_set_context(tls_context(ca, cert, key))
        self.c.on_message = self._msg
        self.connected = threading.Event()

        def on_connect(c, u, f, rc, p):
            c.subscribe("v2g/_sems/%s/heartbeat" % site, 0)
            self.connected.set()

        self.c.on_connect = on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.connected.clear()
        self.c.connect("127.0.0.1", port, 10)
        self.c.loop_start()
        # the first demand is published right after the start: a publish before the
        # CONNACK fails ("not currently connected")
        if not self.connected.wait(30):
            self.close()
            raise RuntimeError("sems-bench: the utility's client got no CONNACK in 30 s")

    def _msg(self, c, u, m):
        try:
            h = json.loads(m.payload)["holder"]
        except (ValueError, KeyError, TypeError):
            return
        if not self.beats or self.beats[-1][1] != h:
            self.beats.append((time.time(), h))

    def holder(self):
        return self.beats[-1][1] if self.beats else None

    def demand(self, d):
        self.n = getattr(self, "n", 0) + 1
        body = dict(d, id="d-%d" % self.n)
        # the client reconnects by itself (loop_start) after a lost connection (the
        # broker once dropped it during the stations' TLS storm); the step waits for that
        end = time.monotonic() + 30.0
        while True:
            try:
                if self.connected.wait(max(0.0, end - time.monotonic())):
                    self.c.publish("v2g/_sems/%s/demand" % self.site, json.dumps(body),
                                   qos=1, retain=True).wait_for_publish(5)
                    return
            except RuntimeError:   # the connection went between the wait and the PUBACK
                if time.monotonic() < end:
                    continue
            raise RuntimeError("sems-bench: the utility could not publish demand %s in "
                               "30 s (not connected)" % body)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


class SiteRun:
    def __init__(self, directory, site_path, emulators=2, instances=("a", "b"),
                 warmup_s=None, boards=0, log=print, boards_nice=0):
        self.dir, self.site_path = str(directory), site_path
        self.site = load_site(site_path)
        self.board_ids = board_stations(self.site, boards)
        self.boards_nice = boards_nice
        self.boards = None
        self.n_emu, self.instances, self.log = emulators, instances, log
        n = len(self.site["stations"])
        # from the SEMS connected to t0: its cold start (every station's telemetry, at most
        # stale_s), its ramp to the first demand, 2 s to settle
        first = [e["demand"].get("export_w", 0.0) for e in self.site["events"]
                 if e["kind"] == "demand" and e["t_s"] <= 0]
        ramp = self.site["site_ramp_w_s"] * (1.0 - self.site["ramp_margin"])
        self.warmup_s = warmup_s if warmup_s is not None else (
            self.site["stale_s"] + (first[-1] if first else 0.0) / ramp + 2.0)
        # the stations' first connections spread over 4 s per thousand
        self.connect_s = max(0.5, n * 0.004)
        self.t0_file = os.path.join(self.dir, "t0")
        self.port = free_port()
        self.procs = {}
        self.emus = []
        self.util = None
        self.marks = {}

    def setup(self):
        t = time.monotonic()
        # a fresh status directory (the SEMS histories of an earlier run would be plotted
        # too) and a fresh broker: its persistence would hand the new SEMS the last run's
        # retained lease, plan and demand (a whole site of stale setpoints to correct)
        for sub in ("status", "broker", "boards"):
            shutil.rmtree(os.path.join(self.dir, sub), ignore_errors=True)
        tls = os.path.join(self.dir, "tls")
        self.ca = pki.CA(tls)
        self.broker_cert = self.ca.issue("broker", "localhost", server=True)
        self.sems_cert = self.ca.issue("sems", "sems")
        self.util_cert = self.ca.issue("utility", "utility")
        self.cert_dir = os.path.join(self.dir, "stations")
        st_ca = pki.CA.__new__(pki.CA)
        st_ca.__dict__.update(self.ca.__dict__, dir=self.cert_dir)
        os.makedirs(self.cert_dir, exist_ok=True)
        for sid in self.site["stations"]:
            st_ca.issue(sid, sid)
        self.log("sems-bench: PKI for %d stations in %.1f s" % (len(self.site["stations"]),
                                                                 time.monotonic() - t))
        self.broker = Broker(os.path.join(self.dir, "broker"), self.port, self.ca.cert_path,
                             *self.broker_cert)
        self.broker.start()

    def start_sems(self, name, priority):
        cert, key = self.sems_cert
        with open(os.path.join(self.dir, "sems-%s.log" % name), "wb") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "v2g.cli", "sems", "run", "--site", self.site_path,
                 "--broker", "127.0.0.1:%d" % self.port, "--ca", self.ca.cert_path,
                 "--cert", cert, "--key", key, "--instance", name, "--priority", str(priority),
                 "--out", os.path.join(self.dir, "status")],
                stdout=out, stderr=out, env=_env())

    def wait_sems_connected(self, timeout_s=60.0):
        """Every SEMS instance connected (it writes its status file once it is) before t0
        is set: a SEMS that connected during the stations' thousand TLS handshakes once
        waited out two 10 s connect timeouts (the site then started without its
        manager)."""
        end = time.monotonic() + timeout_s
        files = [os.path.join(self.dir, "status", "sems-%s.json" % n) for n in self.procs]
        while not all(os.path.exists(f) for f in files):
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > end:
                raise RuntimeError("sems-bench: SEMS %s not connected (%s); see %s" % (
                    ", ".join(sorted(self.procs)), "exited: " + ", ".join(dead) if dead
                    else "%.0f s" % timeout_s, os.path.join(self.dir, "sems-*.log")))
            time.sleep(0.1)

    def start_boards(self, ready_s=90.0):
        """The simulated boards and their daemons, up and energized before the SEMS
        starts (a board's start-up is not a station arriving)."""
        from v2g.backend.sems_boards import BoardStations

        self.boards = BoardStations(os.path.join(self.dir, "boards"), self.board_ids,
                                    self.site, self.port, self.ca.cert_path, self.cert_dir,
                                    self.sems_cert, _env(), log=self.log,
                                    nice=self.boards_nice)
        self.boards.start()
        try:
            self.boards.wait_ready(ready_s)
        except BaseException:
            self.boards.stop()
            self.broker.stop()
            raise

    def start(self):
        """Broker, boards, then the emulated stations (their TLS storm: a thousand
        handshakes keep the broker busy for seconds on a small machine), then the SEMS
        instances once every station is connected; t0 is ``warmup_s`` after that (the
        SEMS's cold start and its ramp to the first demand)."""
        self.setup()
        if self.board_ids:
            self.start_boards()
        try:
            self.util = Utility(self.port, self.ca.cert_path, *self.util_cert,
                                self.site["site"])
            self.start_emulators()
            self.wait_emulators_ready()
            for i, name in enumerate(self.instances):
                self.start_sems(name, 1.0 * i)
            self.wait_sems_connected()
        except BaseException:
            self.stop()
            raise
        self.t0 = time.time() + self.warmup_s
        tmp = self.t0_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(repr(self.t0))
        os.replace(tmp, self.t0_file)
        if self.boards is not None:
            self.boards.t0 = self.t0  # snapshots on the emulators' 2 s grid

    def start_emulators(self):
        if os.path.exists(self.t0_file):   # an earlier run's
            os.remove(self.t0_file)
        # the broker's CPU for the stations' TLS storm (logged with their start-up time)
        self.broker_cpu0 = _cpu_s(self.broker.proc.pid)
        for k in range(self.n_emu):
            out = os.path.join(self.dir, "emu-%d.json" % k)
            ready = os.path.join(self.dir, "emu-%d.ready" % k)
            for f in (out, ready):
                if os.path.exists(f):
                    os.remove(f)
            with open(os.path.join(self.dir, "emu-%d.log" % k), "wb") as log:
                p = subprocess.Popen(
                    [sys.executable, "-m", "v2g.backend.sems_emulator", "--site",
                     self.site_path, "--broker", "127.0.0.1:%d" % self.port, "--ca",
                     self.ca.cert_path, "--certs", self.cert_dir, "--index",
                     "%d/%d" % (k, self.n_emu), "--exclude", ",".join(self.board_ids),
                     "--t0-file", self.t0_file, "--ready", ready, "--out", out,
                     "--connect-s", str(self.connect_s)],
                    stdout=log, stderr=log, env=_env())
            self.emus.append((p, out, ready))

    def wait_emulators_ready(self):
        """Every emulated station connected and subscribed (each emulator's ready file);
        RuntimeError naming the emulators that are not, after ``connect_s`` + 60 s."""
        t = time.monotonic()
        end = t + self.connect_s + 60.0
        while True:
            late = [k for k, (p, _o, ready) in enumerate(self.emus)
                    if not os.path.exists(ready)]
            if not late:
                break
            dead = [k for k in late if self.emus[k][0].poll() is not None]
            if dead or time.monotonic() > end:
                raise RuntimeError("sems-bench: station emulators %s not connected (%s); see "
                                   "%s" % (late, "exited: %s" % dead if dead else "timeout",
                                           os.path.join(self.dir, "emu-*.log")))
            time.sleep(0.1)
        cpu0, cpu1 = self.broker_cpu0, _cpu_s(self.broker.proc.pid)
        self.log("sems-bench: %d emulated stations connected in %.1f s%s" % (
            len(self.site["stations"]) - len(self.board_ids), time.monotonic() - t,
            " (broker CPU %.1f s)" % (cpu1 - cpu0) if None not in (cpu0, cpu1) else ""))

    def run_events(self):
        """Demand steps and SEMS kills at their times (relative to t0)."""
        first = [e for e in self.site["events"] if e["kind"] == "demand" and e["t_s"] <= 0]
        for e in first:
            self.util.demand(e["demand"])
        self.demands = [(self.t0 - self.warmup_s, e["demand"]) for e in first]
        self.kills = []
        for e in self.site["events"]:
            if e["t_s"] <= 0 and e["kind"] == "demand":
                continue
            if e["kind"] in ("arrive", "depart"):
                continue
            while time.time() < self.t0 + e["t_s"]:
                time.sleep(min(0.05, self.t0 + e["t_s"] - time.time()))
            now = time.time()
            if e["kind"] == "demand":
                self.util.demand(e["demand"])
                self.demands.append((now, e["demand"]))
                self.log("sems-bench: t=%.1f demand %s" % (e["t_s"], e["demand"]))
            else:
                names = [self.util.holder()] if e["which"] == "active" else list(self.procs)
                for n in names:
                    p = self.procs.get(n)
                    if p and p.poll() is None:
                        p.send_signal(signal.SIGKILL)
                        p.wait(5)
                self.kills.append((time.time(), e["which"], names))
                self.log("sems-bench: t=%.1f kill -9 SEMS %s" % (e["t_s"], names))
        end = self.t0 + self.site["duration_s"]
        while time.time() < end:
            time.sleep(min(0.2, end - time.time()))

    def stop(self):
        results = []
        for p, _out, _ready in self.emus:
            if p.poll() is None:
                p.terminate()
        for p, out, _ready in self.emus:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if os.path.exists(out):
                with open(out) as f:
                    results.append(json.load(f))
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        if self.boards is not None:
            self.boards.read_pumps()
            self.boards.stop()
            results.append(self.boards.result())
        if self.util is not None:
            self.util.close()
        self.broker.stop()
        return results

    # --- figures ------------------------------------------------------------------------
    def limit_at(self, t):
        lim = self.site["limits"]
        d = None
        for td, dem in self.demands:
            if td <= t:
                d = dem
        exp, _imp, mode = site_limits(lim["transformer_w"], lim["grid_export_w"],
                                     lim["grid_import_w"], d)
        return exp, mode

    def figures(self, results):
        site = self.site
        # site total at 10 Hz: every emulator's samples, forward-filled per bucket
        per = []
        for r in results:
            per.append({round(t * 10): (p, fb, us) for t, p, fb, us in r["samples"]})
        if not per or not all(per):
            return {"error": "no samples from the emulators"}
        lo = min(min(d) for d in per)
        hi = min(max(d) for d in per)
        series = []
        last = [None] * len(per)
        for b in range(lo, hi + 1):
            for i, d in enumerate(per):
                if b in d:
                    last[i] = d[b]
            if None in last:
                continue
            series.append((b / 10.0, -sum(x[0] for x in last), sum(x[1] for x in last),
                           sum(x[2] for x in last)))
        steps = [t for t, _ in self.demands[1:]]
        steps += [self.t0 + e["t_s"] for e in site["events"] if e["kind"] in
                  ("arrive", "depart")]
        worst, worst_t = -1e9, None
        for t, exp_w, _, _ in series:
            if t < self.t0:
                continue
            lim, mode = self.limit_at(t)
            if mode != "export" or lim <= 0:
                continue
            # the series is bucketed to 0.1 s: a bucket up to 0.05 s before a step may hold
            # samples taken just after it
            if any(s - 0.05 <= t <= s + 1.0 for s in steps):
                continue
            o = (exp_w - lim) / lim * 100.0
            if o > worst:
                worst, worst_t = o, t
        lat = sorted(t_ap - ts for r in results for _, _, ts, t_ap in r["applied"]
                     if ts is not None)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None
        b_lat = sorted(t_ap - ts for r in results if r.get("boards")
                       for _, _, ts, t_ap in r["applied"] if ts is not None)
        seen, twice = set(), 0
        for r in results:
            for sid, i, _, _ in r["applied"]:
                twice += (sid, i) in seen
                seen.add((sid, i))
        fig = {"stations": len(site["stations"]), "boards": len(self.board_ids),
               "site_limit_w": site_limits(site["limits"]["transformer_w"],
                                           site["limits"]["grid_export_w"],
                                           site["limits"]["grid_import_w"])[0],
               "max_over_pct": round(worst, 3), "max_over_at_s":
               round(worst_t - self.t0, 2) if worst_t else None,
               "dispatch_p99_s": round(p99, 3) if p99 is not None else None,
               "dispatch_max_s": round(lat[-1], 3) if lat else None,
               "setpoints_applied": len(lat), "applied_twice": twice,
               "duplicates_suppressed": sum(r["duplicates"] for r in results),
               "failover_s": None}
        if b_lat:  # the simulated boards' own share (plan -> applied on the board)
            fig["boards_setpoints_applied"] = len(b_lat)
            fig["boards_dispatch_p99_s"] = round(
                b_lat[min(len(b_lat) - 1, int(0.99 * len(b_lat)))], 3)
        pumps = [p for r in results for p in (r.get("pumps") or {}).values()]
        if pumps:  # did the simulated boards keep real time (niced, beside the site)?
            read = [p for p in pumps if p]
            fig["boards_pumps_read"] = len(read)
            if read:
                fig["boards_slipped_ms_max"] = max(p.get("slipped_ms", 0) for p in read)
                fig["boards_pass_max_ms"] = max(p.get("batch_max_ms", 0) for p in read)
        # failover: kill of the active -> first heartbeat of another holder
        act = [k for k in self.kills if k[1] == "active"]
        if act:
            tk, _, names = act[0]
            new = [t for t, h in self.util.beats if t > tk and h not in names]
            fig["failover_s"] = round(new[0] - tk, 3) if new else None
            fig["killed"] = names
            # limit held through the failover (no step exclusion there)
            win = [(t, e) for t, e, _, _ in series if tk <= t <= tk + 10]
            if win:
                fig["failover_max_over_pct"] = round(max(
                    (e - self.limit_at(t)[0]) / self.limit_at(t)[0] * 100 for t, e in win), 3)
        alld = [k for k in self.kills if k[1] == "all"]
        if alld:
            tk = alld[0][0]
            safe = [t for t, _, _, us in series if t > tk and us == 0]
            fig["all_down_safe_s"] = round(safe[0] - tk, 2) if safe else None
            n = len(site["stations"])
            fb = [t for t, _, f, _ in series if t > tk and f == n]
            fig["all_down_fallback_s"] = round(fb[0] - tk, 2) if fb else None
            fig["hold_s"] = site["hold_s"]
        # aggregate ramp after each demand step up: max over 0.5 s windows
        ramps = []
        for (_t, d_prev), (ts_, d) in zip(self.demands, self.demands[1:], strict=False):
            if d.get("export_w", 0) > d_prev.get("export_w", 0):
                pts = [(t, e) for t, e, _, _ in series if ts_ <= t <= ts_ + 10]
                for (ta, ea), (tb, eb) in zip(pts, pts[5:], strict=False):
                    ramps.append((eb - ea) / (tb - ta))
        if ramps:
            fig["max_ramp_w_s"] = round(max(ramps))
            fig["site_ramp_w_s"] = site["site_ramp_w_s"]
        fig.update(self.fairness(results))
        return fig

    def fairness(self, results):
        """Shares against proportional shares at the last snapshot before the first kill
        (steady state), and the SoC floor over every snapshot."""
        kill_t = self.kills[0][0] if self.kills else float("inf")
        snaps = {}
        below = 0
        for r in results:
            for t, sts in r["snapshots"]:
                for _p, ev in sts.values():
                    if ev and ev["soc_pm"] < ev["soc_min_pm"] - 0.5:
                        below += 1
                k = round(t / 2.0)
                if t < kill_t - 1.0:
                    snaps.setdefault(k, {}).update(sts)
        out = {"below_soc_floor": below}
        n = len(self.site["stations"])
        steps = [t for t, _ in self.demands]

        def settled(k):  # >= 3 s after the last demand step before it
            t = k * 2.0
            return all(not (s_ <= t < s_ + 3.0) for s_ in steps)

        full = [k for k, v in snaps.items() if len(v) == n and settled(k)]
        if not full:
            return out
        sts = snaps[max(full)]
        weights, caps, actual = {}, {}, {}
        for sid, (p, ev) in sts.items():
            spec = self.site["stations"][sid]
            if ev:
                weights[sid] = max(0.0, (ev["soc_pm"] - ev["soc_min_pm"]) / 1000.0
                                   * ev["capacity_wh"])
                caps[sid] = min(ev["max_discharge_w"], spec["max_export_w"])
            actual[sid] = max(0.0, -p)
        ideal = water_fill(weights, caps, sum(actual.values()))
        err = {s: abs(actual[s] - ideal[s]) / ideal[s] for s in ideal if ideal[s] > 100}
        errs = sorted(err.values())
        if errs:
            worst = max(err, key=err.get)
            out["fairness_worst"] = {"station": worst, "actual_w": round(actual[worst]),
                                     "share_w": round(ideal[worst])}
            out["fairness_max_err_pct"] = round(100 * errs[-1], 2)
            out["fairness_p95_err_pct"] = round(100 * errs[int(0.95 * (len(errs) - 1))], 2)
            out["fairness_within_5pct"] = round(sum(e <= 0.05 for e in errs) / len(errs), 4)
        return out


def board_stations(site, n):
    """The ``n`` stations (first by id) that run as simulated boards: only stations whose
    vehicle stays for the whole run (no arrive/depart events: a board's car is plugged in
    by its daemon's ``sim_ev`` at start-up)."""
    moving = {e["station"] for e in site["events"] if e["kind"] in ("arrive", "depart")}
    ids = [s for s in sorted(site["stations"]) if s not in moving
           and site["stations"][s]["ev"]][:n]
    if len(ids) < n:
        raise ValueError("--boards %d: the site has only %d stations with a vehicle and no "
                         "arrive/depart event" % (n, len(ids)))
    return ids


def main(argv=None):
    ap = argparse.ArgumentParser(description="site benchmark: SEMS + emulated stations")
    ap.add_argument("--site", default=str(paths.REPO_ROOT / "bench" / "sems" / "site-1000.yaml"))
    ap.add_argument("--out", default="out/sems-bench")
    ap.add_argument("--emulators", type=int, default=4)
    ap.add_argument("--boards", type=int, default=10,
                    help="stations that run the firmware on simulated boards behind their "
                         "daemons (the rest are emulated); 0: emulators only")
    ap.add_argument("--boards-nice", type=int, default=10,
                    help="niceness added to the simulated boards and their daemons (the "
                         "simulated hardware, which in the field has CPUs of its own, "
                         "yields these cores to the site under test; 0: equal shares)")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    run = SiteRun(os.path.abspath(a.out), a.site, emulators=a.emulators, boards=a.boards,
                  boards_nice=a.boards_nice)
    run.start()
    try:
        run.run_events()
    finally:
        results = run.stop()
    fig = run.figures(results)
    with open(os.path.join(a.out, "results.json"), "w") as f:  # what the figures come from
        json.dump(results, f)
    try:
        from v2g.backend.sems import plot
        plot(os.path.join(run.dir, "status"), os.path.join(run.dir, "site.png"))
        fig["plot"] = os.path.join(a.out, "site.png")
    except (OSError, ValueError, RuntimeError) as e:  # a by-product: figures stand alone
        print("sems-bench: plot failed: %s" % e)
    with open(os.path.join(a.out, "figures.json"), "w") as f:
        json.dump(fig, f, indent=1)
    print(json.dumps(fig))
    if not fig.get("setpoints_applied"):
        # figures from a site that never ran (no SEMS, broker stalled) are no figures
        print("sems-bench: no setpoint was applied: the run failed (see %s/*.log)" % a.out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
