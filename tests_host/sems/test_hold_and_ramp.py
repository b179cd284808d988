"""Units of the SEMS hold and the ramp budget: ``HoldPolicy`` with its fallback lead, the
daemon's ``HoldGate`` (what reaches the link, with an injected clock), the daemon config's
``sems`` section (bad values refused naming the key), and the SEMS's ramp budget counted
over the time since the last plan (a demand step plans at once)."""

import asyncio
import time
from types import SimpleNamespace

import pytest
import yaml
from v2g.backend import testbed
from v2g.backend.sems import Sems, acked
from v2g.backend.sems_plan import make_plan
from v2g.backend.sems_site import SiteError, parse_site

from v2g.gateway import config as config_mod
from v2g.gateway.sems_hold import HoldGate, HoldPolicy

# --- HoldPolicy ---------------------------------------------------------------------------


def test_policy_holds_then_falls_back_lead_s_early():
    pol = HoldPolicy(hold_s=5.0, safe_export_w=1000, safe_import_w=0, lead_s=1.2)
    assert pol.effective(-7000, 100.0, 103.79) == (-7000, "sems")
    assert pol.effective(-7000, 100.0, 103.81) == (-1000, "fallback")
    assert pol.effective(4000, 100.0, 103.81) == (0, "fallback")
    assert pol.effective(-7000, None, 100.0) == (-1000, "fallback")
    # without a lead: the whole hold_s
    assert HoldPolicy(hold_s=5.0).effective(-7000, 100.0, 104.99) == (-7000, "sems")


@pytest.mark.parametrize("kw,words", [
    ({"hold_s": -1}, ["hold_s", "-1"]),
    ({"hold_s": 5, "lead_s": 5}, ["lead_s", "below hold_s"]),
    ({"safe_export_w": "x"}, ["safe_export_w", "'x'"]),
    ({"lead_s": True}, ["lead_s", "True"]),
])
def test_policy_refuses_bad_values(kw, words):
    with pytest.raises(ValueError) as e:
        HoldPolicy(**kw)
    for w in words:
        assert w in str(e.value)


# --- HoldGate: what the daemon passes to the board ----------------------------------------


class Clock:
    t = 1000.0

    def __call__(self):
        return self.t


def gate(lead_s=1.0, link=True):
    sent, clock = [], Clock()

    def send(sp):
        if not link_up[0]:
            return False
        sent.append(sp)
        return True

    link_up = [link]
    g = HoldGate(HoldPolicy(hold_s=5.0, safe_export_w=0, safe_import_w=2000, lead_s=lead_s),
                 send, clock=clock)
    return g, sent, clock, link_up


def test_gate_passes_setpoints_holds_then_safe_limit_then_resumes():
    g, sent, clock, _ = gate()
    assert g.poll() == "fallback" and sent == []          # nothing before any setpoint
    g.setpoint({"id": "s1", "p_w": -7000, "q_var": 500})
    assert sent == [{"id": "s1", "p_w": -7000, "q_var": 500}]
    clock.t += 3.0
    g.heartbeat()                                          # heartbeat at +3 s
    clock.t += 3.9
    assert g.poll() == "sems" and len(sent) == 1           # held: 3.9 < 5 - 1
    clock.t += 0.2
    assert g.poll() == "fallback"
    assert sent[-1]["p_w"] == 0 and sent[-1]["q_var"] == 0  # no export, no q
    assert sent[-1]["id"].startswith("s1~fallback")
    clock.t += 5.0
    assert g.poll() == "fallback" and len(sent) == 2       # sent once
    g.heartbeat()
    assert sent[-1]["p_w"] == -7000 and sent[-1]["q_var"] == 500
    assert sent[-1]["id"].startswith("s1~resume") and sent[-1]["id"] != sent[1]["id"]
    assert g.fallbacks == 1


def test_gate_redelivered_id_is_a_heartbeat_only_and_import_is_capped_safely():
    g, sent, clock, _ = gate(lead_s=0.0)
    g.setpoint({"id": "s1", "p_w": 9000, "q_var": 0})
    clock.t += 4.5
    g.setpoint({"id": "s1", "p_w": 9000, "q_var": 0})     # QoS 1 redelivery
    assert len(sent) == 1
    clock.t += 4.5
    assert g.poll() == "sems"                              # the redelivery was a heartbeat
    clock.t += 1.0
    assert g.poll() == "fallback" and sent[-1]["p_w"] == 2000   # safe_import_w
    g.setpoint({"id": "s2", "p_w": -3000, "q_var": 0})     # a new setpoint: followed at once
    assert g.mode == "sems" and sent[-1] == {"id": "s2", "p_w": -3000, "q_var": 0}


def test_gate_setpoint_zero_needs_no_fallback_message():
    g, sent, clock, _ = gate()
    g.setpoint({"id": "s1", "p_w": 0, "q_var": 0})
    clock.t += 10
    assert g.poll() == "fallback" and len(sent) == 1


def test_gate_retries_while_the_link_is_down():
    g, sent, clock, link = gate()
    g.setpoint({"id": "s1", "p_w": -5000, "q_var": 0})
    link[0] = False
    clock.t += 4.5
    g.poll()                                               # fallback, no link session
    assert len(sent) == 1 and g.sent is None
    clock.t += 0.5
    link[0] = True
    g.poll()                                               # within RETRY_S: not yet
    assert len(sent) == 1
    clock.t += HoldGate.RETRY_S
    g.poll()
    assert sent[-1]["p_w"] == 0 and len(sent) == 2
    g.poll()
    assert len(sent) == 2


# --- the daemon config's sems section -----------------------------------------------------


@pytest.fixture(scope="module")
def billing_cfg(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    bed = testbed.Testbed(d, stations=("ST-0001",))
    with open(bed.node_config("ST-0001", via_proxy=False)) as f:
        cfg = yaml.safe_load(f)
    cfg["link"] = {"device": "/dev/null"}
    return d, cfg


def _load(d, cfg):
    path = d / "daemon.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return config_mod.load(str(path))


def test_config_sems_section(billing_cfg):
    d, cfg = billing_cfg
    c = _load(d, dict(cfg, sems={"hold_s": 4, "fallback_lead_s": 1.2, "safe_export_w": 500,
                                 "site": "depot-1"}))
    assert c.sems["policy"] == HoldPolicy(hold_s=4.0, safe_export_w=500.0, lead_s=1.2)
    assert c.sems["topic"] == "v2g/_sems/depot-1/heartbeat"
    c = _load(d, dict(cfg, sems={}))
    assert c.sems["policy"] == HoldPolicy() and c.sems["topic"] == "v2g/_sems/+/heartbeat"
    assert _load(d, cfg).sems is None


@pytest.mark.parametrize("sems,words", [
    ({"hold": 5}, ["unknown key 'sems.hold'", "hold_s"]),
    ({"hold_s": 0.1}, ["sems.hold_s", "0.1", "0.5..3600"]),
    ({"hold_s": "5"}, ["sems.hold_s", "'5'", "a number"]),
    ({"safe_export_w": -1}, ["sems.safe_export_w", "-1"]),
    ({"hold_s": 3, "fallback_lead_s": 3}, ["sems.fallback_lead_s", "below sems.hold_s"]),
    ({"site": "a/b"}, ["sems.site", "a/b"]),
    ("yes", ["'sems'", "not a mapping"]),
])
def test_config_sems_bad_values_refused(billing_cfg, sems, words):
    d, cfg = billing_cfg
    with pytest.raises(config_mod.ConfigError) as e:
        _load(d, dict(cfg, sems=sems))
    for w in words:
        assert w in str(e.value), str(e.value)


def test_config_sems_needs_the_mqtt_connection(tmp_path):
    with pytest.raises(config_mod.ConfigError) as e:
        _load(tmp_path, {"link": {"device": "/dev/null"}, "sems": {"hold_s": 5}})
    assert "'sems'" in str(e.value) and "mqtt" in str(e.value)


def test_site_file_lead_below_hold():
    base = {"site": "s", "limits": {"transformer_w": 1e5, "grid_export_w": 1e5,
                                    "grid_import_w": 1e5}, "stations": [{"id": "ST-1"}]}
    assert parse_site(dict(base, fallback_lead_s=1.2))["fallback_lead_s"] == 1.2
    with pytest.raises(SiteError) as e:
        parse_site(dict(base, hold_s=2, fallback_lead_s=2))
    assert "fallback_lead_s" in str(e.value) and "hold_s" in str(e.value)


# --- the ramp budget ------------------------------------------------------------------------


def _site(n=40, **kw):
    d = {"site": "s", "limits": {"transformer_w": 1e6, "grid_export_w": 4e5,
                                 "grid_import_w": 4e5},
         "period_s": 0.5, "site_ramp_w_s": 100000, "stale_s": 5.0,
         "generate": {"count": n, "prefix": "ST-", "seed": 3}}
    d.update(kw)
    return parse_site(d)


def _sems(tmp_path, site):
    s = Sems(site, "127.0.0.1", 1, None, None, None, "a", str(tmp_path))
    s.demand = {"export_w": 400000.0}
    for sid, spec in site["stations"].items():
        s.readings[sid] = ({"p_w": 0.0, "ev": spec["ev"]}, 0.0)
    return s


def _increase(s, plan):
    inc = sum(max(0, abs(plan.setpoints[k]) - abs(s.sp[k][0])) for k in plan.setpoints)
    for k, p in plan.setpoints.items():
        s.sp[k][0] = p
    return inc


def test_ramp_budget_counts_the_time_since_the_last_plan(tmp_path):
    site = _site()
    s = _sems(tmp_path, site)
    plan, _ = s.make(1.0)
    first = _increase(s, plan)
    assert 0.9 * 100000 * 0.5 <= first <= 100000 * 0.5 + 1   # a whole period's ramp
    plan, _ = s.make(1.1)                 # a demand step 0.1 s later: plans at once
    assert _increase(s, plan) <= 100000 * 0.1 + 1
    plan, _ = s.make(1.5)                 # the scheduled plan
    assert _increase(s, plan) <= 100000 * 0.4 + 1
    plan, _ = s.make(9.0)                 # a long gap (a takeover): one period at most
    assert _increase(s, plan) <= 100000 * 0.5 + 1


def test_plan_ramp_within_budget_for_any_dt():
    from v2g.backend.sems_plan import Station
    sts = [Station(id="S%d" % i, max_export_w=11000, max_import_w=11000, ramp_w_s=5000,
                   p_w=0.0, age_s=0.1, ev={"soc_pm": 800, "soc_min_pm": 200,
                                           "soc_max_pm": 1000, "capacity_wh": 60000,
                                           "max_charge_w": 11000, "max_discharge_w": 11000})
           for i in range(50)]
    for dt in (0.05, 0.2, 0.5, 1.0):
        plan = make_plan(sts, 400000, 400000, "export", dt, site_ramp_w_s=100000)
        assert -sum(plan.setpoints.values()) <= 100000 * dt + 1


def test_ramp_margin_leaves_room_for_delivery_jitter(tmp_path):
    s = _sems(tmp_path, _site(ramp_margin=0.1))
    plan, _ = s.make(1.0)
    assert 0.8 * 90000 * 0.5 <= _increase(s, plan) <= 90000 * 0.5 + 1
    with pytest.raises(SiteError) as e:
        _site(ramp_margin=1.0)
    assert "ramp_margin" in str(e.value) and "1.0" in str(e.value)


def test_cold_start_waits_for_the_table_before_increasing(tmp_path):
    site = _site(n=10)
    s = _sems(tmp_path, site)
    t = s.started
    for sid in list(s.readings)[5:]:
        del s.readings[sid]
    for sid, (r, _) in s.readings.items():
        s.readings[sid] = (r, t + 1.0)
    plan, _ = s.make(t + 1.0)             # half the stations heard, 1 s after the start
    assert _increase(s, plan) == 0
    plan, _ = s.make(t + site["stale_s"])  # stale_s later: share what is known
    assert _increase(s, plan) > 0
    s2 = _sems(tmp_path, site)             # every station heard: at once
    for sid, (r, _) in s2.readings.items():
        s2.readings[sid] = (r, s2.started)
    plan, _ = s2.make(s2.started + 0.1)
    assert _increase(s2, plan) > 0


# --- dispatch and tick costs -----------------------------------------------------------


class _Info:
    rc = 0

    def is_published(self):
        return True


class _Paho:
    """paho's client under aiomqtt: ``publish`` queues and returns an info at once;
    ``loop_write`` writes everything queued."""

    def __init__(self, sent):
        self.sent = sent
        self.written = 0

    def publish(self, topic, payload, qos=0, retain=False):
        self.sent.append((topic, payload))
        return _Info()

    def loop_write(self):
        self.written = len(self.sent)

    def want_write(self):
        return self.written < len(self.sent)


class _Client:
    """What ``Sems`` uses of an aiomqtt client: ``publish`` and the paho client under it."""

    def __init__(self):
        self.sent = []      # (topic, payload) in the order they were queued
        self._client = _Paho(self.sent)

    def publish(self, topic, payload, qos=0, retain=False):
        self.sent.append((topic, payload))
        return _async_none()          # aiomqtt's publish: awaited


async def _async_none():
    return None


def test_decreases_leave_largest_first(tmp_path):
    import json
    s = _sems(tmp_path, _site(n=30))
    for k, sid in enumerate(s.sp):          # exporting 1..30 kW; the limit falls to 20 kW
        s.sp[sid] = [-1000.0 * (k + 1), "old"]
    s.demand = {"export_w": 20000.0}
    plan, _ = s.make(1.0)
    old = {sid: v[0] for sid, v in s.sp.items()}
    c = _Client()
    asyncio.run(s.dispatch(c, plan, 1.0))
    steps = [abs(old[json.loads(p)["station"]] - json.loads(p)["p_w"])
             for t, p in c.sent if t.endswith("cmd/setpoint")]
    assert len(steps) >= 20 and steps == sorted(steps, reverse=True), steps


def test_standby_plans_and_writes_status_once_a_second(tmp_path, monkeypatch):
    from v2g.backend import sems as sems_mod
    s = _sems(tmp_path, _site(n=10))
    calls = []
    make = s.make
    monkeypatch.setattr(s, "make", lambda now: calls.append(now) or make(now))
    now = [100.0]
    monkeypatch.setattr(sems_mod.time, "monotonic", lambda: now[0])
    c = _Client()
    for k in range(8):                      # 4 s of 0.5 s periods, the holder renewing
        now[0] = 100.0 + 0.5 * k
        s.lease_seen = now[0]
        asyncio.run(s.tick(c))
    assert s.role == "standby" and c.sent == []
    assert calls == [100.0, 101.0, 102.0, 103.0]


def test_active_publishes_the_retained_plan_at_most_once_a_second(tmp_path, monkeypatch):
    from v2g.backend import sems as sems_mod
    s = _sems(tmp_path, _site(n=10))
    s.role, s.holder, s.epoch = "active", "a", 1
    s.stagger_s = 0.0
    now = [100.0]
    monkeypatch.setattr(sems_mod.time, "monotonic", lambda: now[0])
    c = _Client()

    async def periods(n):
        for k in range(n):
            now[0] = 100.0 + 0.25 * k
            await s.tick(c)
            await asyncio.sleep(0)
            for sid, (r, _) in s.readings.items():   # the stations follow at once
                s.readings[sid] = (dict(r, p_w=float(s.sp[sid][0])), now[0])
        await asyncio.gather(*s._pub_tasks)

    asyncio.run(periods(12))                # 3 s, the plan ramping (changing) all along
    changes = sum(t.endswith("cmd/setpoint") for t, _ in c.sent)
    plans = [t for t, _ in c.sent if t.endswith("/plan")]
    assert changes > 12 * 5 and len(plans) == 3, (changes, len(plans))   # at 0, 1, 2 s
    assert sum(t.endswith("/lease") for t, _ in c.sent) == 12


def test_paho_callback_takes_telemetry_reports_lag_and_never_raises(tmp_path, monkeypatch):
    import json
    import time as _time
    from types import SimpleNamespace
    from v2g.backend import sems as sems_mod
    s = _sems(tmp_path, _site(n=3))
    s.readings.clear()
    ev = {"soc_pm": 500, "soc_min_pm": 200, "capacity_wh": 60000, "max_charge_w": 11000,
          "max_discharge_w": 11000}
    now = _time.time()
    for k, (sid, age_s) in enumerate([("ST-0001", 0.2), ("ST-0002", 1.5), ("ST-0003", 0.4)]):
        body = {"station": sid, "seq": k, "t": now - age_s, "p_w": -1000.0, "ev": ev}
        s._paho_message(None, None, SimpleNamespace(topic="v2g/%s/telemetry" % sid,
                                                    payload=json.dumps(body).encode()))
    # a handler that raises (here: on_message itself) is logged, never raised into paho
    monkeypatch.setattr(s, "on_message", lambda t, p: 1 / 0)
    s._paho_message(None, None, SimpleNamespace(topic="v2g/ST-0001/telemetry", payload=b"{}"))
    assert sorted(s.readings) == ["ST-0001", "ST-0002", "ST-0003"]
    lag = s.lag_figures()
    assert lag["n"] == 3 and 0.4 <= lag["p50"] < 1.0 and 1.5 <= lag["max"] < 2.5, lag
    assert s.lag_figures() is None          # reset at each status
    s.lags = [0.3]
    s.write_status(None, 0.0, 0.0)
    with open(tmp_path / "sems-a.csv") as f:
        head, row = f.read().splitlines()
    assert head.endswith("lag_p50_s,lag_max_s") and row.endswith("0.3,0.3")
    assert sems_mod.json.load(open(tmp_path / "sems-a.json"))["telemetry_lag_s"]["n"] == 1


@pytest.mark.parametrize("bad", [0, 17, 2.5, "4", True])
def test_site_dispatch_connections_refused(bad):
    with pytest.raises(SiteError) as e:
        _site(dispatch_connections=bad)
    assert "dispatch_connections" in str(e.value)


def test_burst_splits_over_the_dispatch_connections_one_station_one_connection(tmp_path):
    site = _site(n=40, dispatch_connections=3)
    assert _site(n=2)["dispatch_connections"] == 1 and site["dispatch_connections"] == 3
    s = _sems(tmp_path, site)
    s.pool = [_Client(), _Client(), _Client()]
    msgs = [("v2g/%s/cmd/setpoint" % sid, "%s-%d" % (sid, k))
            for k in range(3) for sid in site["stations"]]
    infos = s.burst(None, msgs)
    assert len(infos) == len(msgs)
    # written to every connection in the burst itself, not left to the event loop
    assert not any(c._client.want_write() for c in s.pool)
    got = [m for c in s.pool for m in c.sent]
    assert sorted(got) == sorted(msgs)                      # each once
    where = {}
    for i, c in enumerate(s.pool):
        assert len(c.sent) >= 40 * 3 // 10                  # every connection takes a share
        for topic, body in c.sent:
            assert where.setdefault(topic, i) == i          # a station on one connection
    for c in s.pool:                                        # in order per station
        for sid in site["stations"]:
            mine = [b for t, b in c.sent if t == "v2g/%s/cmd/setpoint" % sid]
            assert mine == sorted(mine)


def test_acked_tells_written_from_acknowledged():
    """``acked`` times a burst in two parts: written by this process, acknowledged by the
    broker (the status's largest decrease burst)."""
    t0 = time.monotonic()

    class Info:   # acknowledged ``at`` seconds after the start
        def __init__(self, at):
            self.at = at

        def is_published(self):
            return time.monotonic() - t0 >= self.at

    class Paho:   # everything written after 0.05 s
        def want_write(self):
            return time.monotonic() - t0 < 0.05

    client = SimpleNamespace(_client=Paho())
    ok, written, first = asyncio.run(acked([Info(0.5), Info(0.8)], 5.0, poll_s=0.01,
                                           clients=[client]))
    assert ok and 0.05 <= written < 0.5 <= first < 0.8
    ok, written, first = asyncio.run(acked([Info(100.0)], 0.1, poll_s=0.01,
                                           clients=[client]))
    assert not ok and written is not None and first is None
