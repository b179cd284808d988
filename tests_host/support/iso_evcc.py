"""Run Josev's EVCC simulator against ``v2g.gateway.station`` in a veth namespace pair.

Shared by the namespace tests and the demo (``v2g.gateway.demo`` has its own copy of the
orchestration; this one keeps the tests independent of it).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # tests_host/support -> repo


def evcc_config(service, loops, tmp, overrides=None):
    import iso15118

    base = Path(iso15118.__file__).parent / "shared/examples/evcc/iso15118_20"
    name = {"AC_BPT": "evcc_config_ac_bpt.json", "DC_BPT": "evcc_config_dc_bpt.json"}[service]
    cfg = json.loads((base / name).read_text())
    cfg["chargeLoopCycle"] = loops
    cfg.update(overrides or {})
    path = Path(tmp) / ("ev_%s.json" % service)
    path.write_text(json.dumps(cfg))
    return path


def run_session(pair, station_cfg, service="AC_BPT", loops=12, timeout=90, ev=True,
                ev_env=None, ev_cfg=None, ev_timeout=None):
    """Start the station (charger namespace), then the EVCC (car namespace); returns
    (events list, station stderr, evcc log text, station rc). ``ev_env``: extra
    environment of the car (``PKI_PATH``, ``ENABLE_TLS_1_3``); ``ev_cfg``: keys over its
    example config (``useTls``); ``ev_timeout``: stop the car after that many seconds
    (one that retries forever)."""
    tmp = tempfile.mkdtemp(prefix="v2g-iso-")
    cfg_path = Path(tmp) / "station.json"
    cfg_path.write_text(json.dumps(station_cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO / "host_tools"), MESSAGE_LOG_JSON="False")
    err_path = Path(tmp) / "station.err"
    err_file = open(err_path, "w")  # a file, not a pipe: nobody reads it during the run
    st = subprocess.Popen(
        pair.exec_argv("se", [sys.executable, "-m", "v2g.gateway.station", "--iface",
                              pair.if_se, "--config", str(cfg_path), "--timeout-s",
                              str(timeout - 10), "--refused-wait-s", "1"]),
        stdout=subprocess.PIPE, stderr=err_file, text=True, env=env, cwd=tmp)
    events = []
    # wait for "ready" (the JVM starts first)
    for line in st.stdout:
        if line.startswith("{"):
            events.append(json.loads(line))
            if events[-1]["event"] in ("ready", "handshake_refused"):
                break
    ev_log = ""
    if ev:
        car_env = dict(env, NETWORK_INTERFACE=pair.if_ev,
                       EVCC_CONFIG_PATH=str(evcc_config(service, loops, tmp, ev_cfg)),
                       **(ev_env or {}))
        try:
            evp = subprocess.run(
                pair.exec_argv("ev", [sys.executable, "-m", "iso15118.evcc.main"]),
                capture_output=True, text=True, env=car_env, cwd=tmp,
                timeout=ev_timeout or timeout)
            ev_log = evp.stdout + evp.stderr
        except subprocess.TimeoutExpired as e:  # a car that retries forever: its log so far
            ev_log = "".join(x.decode(errors="replace") if isinstance(x, bytes) else x
                             for x in (e.stdout or "", e.stderr or ""))
    out, _ = st.communicate(timeout=timeout)
    err_file.close()
    err = err_path.read_text()
    events += [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return events, err, ev_log, st.returncode
