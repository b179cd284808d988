"""``v2g sems``: the site energy manager (plan: ``sems_plan``; site file: ``sems_site``).

Topics (besides the stations' own ``v2g/<st>/telemetry`` and ``v2g/<st>/cmd/setpoint``),
under ``v2g/_sems/<site>/`` (``_`` is not a valid station id's first character, so these
never collide with a station):

============  =====  ========  ===========================================================
``lease``     1, r   SEMS      ``{"holder","epoch","lease_s","t"}``; a will of
                               ``{"holder","epoch","released":true}`` on connection loss
``heartbeat`` 0      active    ``{"holder","epoch","t"}`` every period; stations hold
``plan``      1, r   active    the last plan (at most 1/s, after a change): ``{"holder","epoch","t","setpoints":{st:[p,id]}}``
``demand``    1, r   utility   ``{"id","export_w"}`` / ``{"id","import_w"}`` / ``{"id"}``
============  =====  ========  ===========================================================

HA: every instance subscribes to everything and keeps the station table warm. The one that
holds the lease acts: renews it every period, plans, publishes setpoints (QoS 1, ids
``<site>-<holder>-e<epoch>-<boot>-<n>``, only where they change, spread over ``stagger_s``) and
the heartbeat. A standby takes over when no renewal has arrived for ``lease_s +
priority`` seconds (or at once plus ``priority`` when the holder's will says it is gone):
epoch + 1, the retained plan as its starting point (so unchanged setpoints are not sent
again). Two instances claiming the same epoch: the lower holder id keeps it, the other
steps down. Times are local receipt times, so clocks need not agree.

Status: once a second the instance writes ``<out>/sems-<instance>.json`` (role, limits,
measured site total, plan, each share, telemetry lag) and appends
``<out>/sems-<instance>.csv`` (t, limit, measured, planned, role, telemetry lag median and
largest); ``v2g sems status --out DIR [--json] [--plot PNG]`` reads them.

Context: host (back end).
"""

import asyncio
import contextlib
import csv
import glob
import json
import logging
import os
import signal
import ssl
import time
import zlib

import aiomqtt

from v2g.backend.sems_plan import Station, make_plan, site_limits
from v2g.backend.sems_site import TelemetryError, load_site, parse_telemetry
from v2g.common.errors import ToolError, UsageError

log = logging.getLogger("v2g.sems")

# Status files and the retained plan are written at most this often (seconds): a status of
# a thousand shares costs ~10 ms of JSON, and a standby plans only to write it
STATUS_S = 1.0
PLAN_PUB_S = 1.0


def tls_context(ca, cert, key):
    c = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    c.minimum_version = c.maximum_version = ssl.TLSVersion.TLSv1_3
    c.load_cert_chain(cert, key)
    return c


def publish_burst(client, msgs, qos=1):
    """Queue ``msgs`` ([(topic, payload)]) on the connection at once and return their paho
    ``MQTTMessageInfo``s (``is_published()`` once the PUBACK is in). aiomqtt's ``publish``
    awaits each PUBACK and scans every pending call on each new one, so a ``gather`` of a
    thousand setpoints cost 0.35-0.45 s on two cores before the first left (a thousand
    "pending publish calls" warnings besides); this queues them in ~25 ms and writes them
    to the socket at once, as far as it takes them (the rest leaves from the event loop's
    writer callback). Left to that callback alone, a burst waited 0.36-0.57 s behind the
    loop's other callbacks on a loaded machine (status ``written_s``). Uses the paho
    client under aiomqtt (``Client._client``, aiomqtt pinned in pyproject.toml). Raises
    ``aiomqtt.MqttCodeError`` if the connection refuses one (the rest of the burst is not
    queued); a write that fails is paho's connection loss, seen by the session. Context:
    the SEMS's event loop."""
    paho = client._client
    infos = []
    for topic, payload in msgs:
        info = paho.publish(topic, payload, qos)
        if info.rc != 0:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish %s" % topic)
        infos.append(info)
    paho.loop_write()
    return infos


async def acked(infos, timeout_s, poll_s=0.01, clients=()):
    """Wait until every info of ``publish_burst`` is acknowledged or ``timeout_s`` passes.
    Returns (all acknowledged, seconds until ``clients`` (aiomqtt) had written everything
    queued, seconds until the first acknowledgement); a time is None if it did not happen.
    The two times tell a burst held in this process's writes from one written at once and
    acknowledged late (the broker, or this process reading the acknowledgements)."""
    t0 = time.monotonic()
    end = t0 + timeout_s
    written = first = None
    while True:
        now = time.monotonic()
        if written is None and not any(c._client.want_write() for c in clients):
            written = now - t0
        if first is None and any(i.is_published() for i in infos):
            first = now - t0
        if all(i.is_published() for i in infos):
            return True, written, first
        if now > end:
            return False, written, first
        await asyncio.sleep(poll_s)


def _b36(n):
    d = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = d[r] + out
    return out or "0"


class Sems:
    def __init__(self, site, host, port, ca, cert, key, instance, out, priority=0.0,
                 stagger_s=None):
        self.site, self.host, self.port = site, host, port
        self.tls = (ca, cert, key)
        self.instance, self.out, self.priority = instance, out, priority
        self.stagger_s = 0.8 * site["period_s"] if stagger_s is None else stagger_s
        base = "v2g/_sems/%s/" % site["site"]
        self.t_lease, self.t_hb = base + "lease", base + "heartbeat"
        self.t_plan, self.t_demand = base + "plan", base + "demand"
        self.readings = {}        # station -> (reading, monotonic receipt)
        self.sp = {sid: [0, None] for sid in site["stations"]}   # station -> [p_w, id]
        self.demand = None
        self.role = "standby"
        self.epoch = 0
        self.holder = None
        self.lease_seen = None    # monotonic time of the last renewal by another holder
        self.released_at = None
        self.boot = _b36(int(time.time() * 1000))
        self.started = time.monotonic()
        self.counter = 0
        self.drops = {}           # (station, field) -> count
        self.sent = 0
        self.plan = None
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.last_hb = -1e9
        self.last_plan_t = None   # monotonic time of the last plan
        self.warm = False         # the station table has filled (see make)
        # the largest decrease burst so far: (seconds to the last PUBACK, setpoints,
        # seconds until written, seconds to the first PUBACK)
        self.dec_burst = (0.0, 0, None, None)
        self._pub_tasks = set()
        self.pool = []            # the dispatch connections (session)
        self.last_status = -1e9   # monotonic time of the last status write
        self.last_plan_pub = -1e9  # ... of the last retained plan
        self.plan_dirty = True    # setpoints changed since then
        self.lags = []            # telemetry receipt - station time (s) since the last status
        os.makedirs(out, exist_ok=True)
        self.status_path = os.path.join(out, "sems-%s.json" % instance)
        self.hist_path = os.path.join(out, "sems-%s.csv" % instance)

    # --- messages -----------------------------------------------------------------------
    def on_message(self, topic, payload):
        if topic.endswith("/telemetry"):
            try:
                sid, r = parse_telemetry(topic, payload, self.site["stations"])
            except TelemetryError as e:
                k = (e.station, e.field)
                if k not in self.drops:
                    log.warning("sems: dropped %s", e)
                self.drops[k] = self.drops.get(k, 0) + 1
                return
            self.readings[sid] = (r, time.monotonic())
            self.lags.append(time.time() - r["t"])
        elif topic == self.t_lease:
            self.on_lease(payload)
        elif topic == self.t_plan and self.role != "active":
            try:
                d = json.loads(payload)
                if d.get("epoch", -1) >= self.epoch:
                    for sid, (p, i) in d["setpoints"].items():
                        if sid in self.sp:
                            self.sp[sid] = [p, i]
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("sems: retained plan unreadable, ignored")
        elif topic == self.t_demand:
            try:
                d = json.loads(payload) if payload else {}
                dem = {k: float(d[k]) for k in ("export_w", "import_w") if k in d}
                if any(v < 0 for v in dem.values()):
                    raise ValueError
                if (dem or None) != self.demand and self.role == "active":
                    self.wake.set()      # a new limit: plan now, not at the next period
                    #                      (a standby keeps its period: no CPU taken from
                    #                      the active's burst of decreases)
                self.demand = dem or None
                log.info("sems: demand signal %s", self.demand)
            except (ValueError, TypeError, AttributeError):
                log.warning("sems: demand %r dropped: {id, export_w|import_w >= 0}",
                            payload[:200])

    def on_lease(self, payload):
        try:
            d = json.loads(payload)
            holder, epoch = d["holder"], int(d["epoch"])
        except (ValueError, KeyError, TypeError):
            return
        if holder == self.instance:
            return
        now = time.monotonic()
        if d.get("released"):
            self.epoch = max(self.epoch, epoch)
            if holder == self.holder or self.holder is None:
                self.holder = holder
                self.released_at = now
            return
        if epoch > self.epoch or (epoch == self.epoch and (self.holder is None or
                                                            holder <= self.holder)):
            if self.role == "active":
                log.warning("sems %s: lease taken by %s epoch %d: standing by",
                            self.instance, holder, epoch)
                self.role = "standby"
            self.epoch, self.holder = epoch, holder
        if holder == self.holder:
            self.lease_seen = now
            self.released_at = None

    # --- lease --------------------------------------------------------------------------
    def should_take_over(self, now):
        wait = self.site["lease_s"] + self.priority
        if self.released_at is not None:
            return now - self.released_at > self.priority
        return now - (self.lease_seen or self.started) > wait

    def publish_lease(self, client):
        # QoS 0 (retained): a renewal must never wait for PUBACKs behind a burst of QoS 1
        # setpoints (under load that once delayed it past lease_s and the standby took
        # over); a lost renewal costs nothing, the next one follows a period later, and a
        # lost connection is reported by the will. Queued on the paho client, not awaited
        client._client.publish(self.t_lease, json.dumps(
            {"holder": self.instance, "epoch": self.epoch, "lease_s": self.site["lease_s"],
             "t": round(time.time(), 3)}), qos=0, retain=True)

    # --- the plan -----------------------------------------------------------------------
    def stations(self, now):
        out = []
        for sid, spec in self.site["stations"].items():
            r, at = self.readings.get(sid, (None, None))
            out.append(Station(
                id=sid, max_export_w=spec["max_export_w"], max_import_w=spec["max_import_w"],
                ramp_w_s=spec["ramp_w_s"], p_w=r["p_w"] if r else None,
                age_s=(now - at) if at is not None else None, ev=r["ev"] if r else None,
                sp_w=self.sp[sid][0]))
        return out

    def make(self, now):
        lim = self.site["limits"]
        exp, imp, mode = site_limits(lim["transformer_w"], lim["grid_export_w"],
                                     lim["grid_import_w"], self.demand)
        sts = self.stations(now)
        # ramps are budgeted over the time since the last plan, not a whole period: a
        # demand step plans at once, and the scheduled plan that follows shortly after
        # must not hand out a second period's ramp
        dt = self.site["period_s"]
        if self.last_plan_t is not None:
            dt = max(0.0, min(dt, now - self.last_plan_t))
        self.last_plan_t = now
        # the margin keeps the delivered aggregate ramp within site_ramp_w_s although
        # delivery jitter bunches the staggered slices (docs/sems.md)
        ramp = self.site["site_ramp_w_s"] * (1.0 - self.site["ramp_margin"])
        # a cold start: no increases until every station has reported or stale_s has
        # passed (shares from a half-filled table are reshuffled a moment later: a burst of
        # setpoints to every station for nothing); a standby's table is warm already
        if not self.warm:
            self.warm = (len(self.readings) == len(self.site["stations"]) or
                         now - self.started >= self.site["stale_s"])
            if not self.warm:
                ramp = 0.0
        plan = make_plan(sts, exp, imp, mode, dt, ramp, self.site["stale_s"],
                         self.site["deadband_w"])
        measured = sum(s.p_w for s in sts if s.p_w is not None and s.age_s is not None
                       and s.age_s <= self.site["stale_s"])
        return plan, measured

    def burst(self, client, msgs):
        """``publish_burst`` over the dispatch connections: each station always on the same
        one (its setpoints stay in order), the burst split between them. On one connection
        a thousand setpoints took 1.7 s to leave a loaded site: the socket stayed full while
        the broker served a thousand stations' connections in turn (docs/sems.md)."""
        pool = self.pool or [client]
        parts = [[] for _ in pool]
        for m in msgs:
            parts[zlib.crc32(m[0].encode()) % len(pool)].append(m)
        infos = []
        for c, part in zip(pool, parts, strict=True):
            if part:
                infos += publish_burst(c, part)
        return infos

    async def dispatch(self, client, plan, ts):
        """Publish the changed setpoints: decreases (the safe direction) at once, increases
        in slices spread over ``stagger_s`` so the stations do not ramp in one instant."""
        dec, inc = [], []
        for sid in plan.changed:
            self.counter += 1
            sp_id = "%s-%s-e%d-%s-%d" % (self.site["site"], self.instance, self.epoch,
                                         self.boot, self.counter)
            old, p = self.sp[sid][0], plan.setpoints[sid]
            self.sp[sid] = [p, sp_id]
            msg = ("v2g/%s/cmd/setpoint" % sid, json.dumps(
                {"id": sp_id, "p_w": p, "q_var": 0, "station": sid, "ts": ts}))
            if abs(p) > abs(old) and p * old >= 0:
                inc.append(msg)
            else:
                dec.append((abs(old - p), msg))
        dec_infos = []
        if dec:
            # the largest steps first: a burst of a thousand takes a few tenths of a second
            # to leave and the site total falls fastest this way
            dec.sort(key=lambda x: -x[0])
            dec = [m for _, m in dec]
            t0 = time.monotonic()
            dec_infos = self.burst(client, dec)
            self.sent += len(dec)
        if inc:
            slices = max(1, min(8, len(inc) // 10))
            per = -(-len(inc) // slices)
            for k in range(slices):
                part = inc[k * per:(k + 1) * per]
                self.burst(client, part)
                self.sent += len(part)
                if k + 1 < slices:
                    await asyncio.sleep(self.stagger_s / slices)
        if dec_infos:
            ok, written, first = await acked(dec_infos, self.site["period_s"] * 4,
                                             clients=self.pool)
            if ok:
                # the burst's cost up to the last PUBACK (status: the largest so far)
                cost = (round(time.monotonic() - t0, 3), len(dec),
                        None if written is None else round(written, 3),
                        None if first is None else round(first, 3))
                if cost[:2] > self.dec_burst[:2]:
                    self.dec_burst = cost

    def lag_figures(self):
        """Median and largest telemetry lag (receipt minus the station's ``t``, seconds;
        it includes any offset between the clocks) since the last status, or None."""
        lags, self.lags = sorted(self.lags), []
        if not lags:
            return None
        return {"p50": round(lags[len(lags) // 2], 3), "max": round(lags[-1], 3),
                "n": len(lags)}

    def write_status(self, plan, measured, now):
        lag = self.lag_figures()
        st = {"instance": self.instance, "role": self.role, "holder": self.holder,
              "epoch": self.epoch, "t": round(time.time(), 3), "demand": self.demand,
              "sent": self.sent, "dropped_telemetry": sum(self.drops.values()),
              "drops": {"%s.%s" % k: v for k, v in sorted(self.drops.items())},
              "measured_w": round(measured, 1), "telemetry_lag_s": lag,
              "largest_decrease_burst": {
                  "s": self.dec_burst[0], "setpoints": self.dec_burst[1],
                  "written_s": self.dec_burst[2], "first_ack_s": self.dec_burst[3]}}
        if plan is not None:
            st.update(mode=plan.mode, limit_w=plan.limit_w,
                      planned_w=sum(plan.setpoints.values()), reserve_w=plan.reserve_w,
                      headroom_w=round(plan.headroom_w, 1), stale=plan.stale,
                      shares={sid: {"p_w": p, "target_w": round(plan.targets[sid], 1)}
                              for sid, p in plan.setpoints.items()})
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, self.status_path)
        new = not os.path.exists(self.hist_path)
        with open(self.hist_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["t", "limit_w", "measured_w", "planned_w", "role", "lag_p50_s",
                            "lag_max_s"])
            w.writerow([st["t"], st.get("limit_w", ""), st["measured_w"],
                        st.get("planned_w", ""), self.role, lag["p50"] if lag else "",
                        lag["max"] if lag else ""])

    async def tick(self, client):
        now = time.monotonic()
        if self.role == "standby" and self.should_take_over(now):
            self.epoch += 1
            self.holder = self.instance
            self.role = "active"
            self.released_at = None
            log.warning("sems %s: taking the lease, epoch %d", self.instance, self.epoch)
        active = self.role == "active"
        due = now - self.last_status >= STATUS_S
        if not (active or due):
            # a standby plans only for its status: it takes over with a fresh plan
            return
        plan, measured = self.make(now)
        if active:
            ts = round(time.time(), 4)
            self._spawn(self.dispatch(client, plan, ts))
            # let the decreases leave before anything else this tick (the dispatch's first
            # step queues them all on the connection)
            await asyncio.sleep(0)
            # renewal and heartbeat queued, not awaited (QoS 0: nothing to wait for but the
            # write; awaiting it once held a plan 0.5 s on a loaded machine)
            self.publish_lease(client)
            if now - self.last_hb >= self.site["heartbeat_s"] - 0.05:
                self.last_hb = now
                client._client.publish(self.t_hb, json.dumps(
                    {"holder": self.instance, "epoch": self.epoch,
                     "t": round(time.time(), 3)}), qos=0)
            if plan.changed:
                self.plan_dirty = True
            if self.plan_dirty and now - self.last_plan_pub >= PLAN_PUB_S:
                # the retained plan (every setpoint and its id, ~40 kB for a thousand
                # stations) at most once a second, and only after a change: a standby
                # taking over with a plan up to a second old re-sends the few setpoints
                # changed since, with new ids (never the same id twice). Not awaited: the
                # next period's tick must not wait for its PUBACK
                self.plan_dirty, self.last_plan_pub = False, now
                self._spawn(client.publish(self.t_plan, json.dumps(
                    {"holder": self.instance, "epoch": self.epoch, "t": ts,
                     "setpoints": {sid: v for sid, v in self.sp.items()}}), qos=1,
                    retain=True))
        self.plan = plan
        if due:
            self.last_status = now
            self.write_status(plan, measured, now)

    def _spawn(self, coro):
        task = asyncio.create_task(coro)
        self._pub_tasks.add(task)
        task.add_done_callback(self._pub_tasks.discard)

    def _client(self, identifier, **kw):
        return aiomqtt.Client(self.host, self.port, identifier=identifier,
                              tls_context=tls_context(*self.tls), keepalive=5,
                              clean_session=True, timeout=10,
                              # 0: no client-side window; with one, paho rescans every
                              # queued message on each PUBACK (a thousand-setpoint burst:
                              # a million steps)
                              max_inflight_messages=0, **kw)

    async def session(self):
        will = aiomqtt.Will(self.t_lease, json.dumps(
            {"holder": self.instance, "epoch": self.epoch, "released": True}), qos=1,
            retain=True)
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(self._client(
                "sems-" + self.instance, will=will, max_queued_incoming_messages=0))
            # further connections that only publish setpoints (site key
            # dispatch_connections; the first one is this one)
            self.pool = [client]
            for k in range(1, self.site["dispatch_connections"]):
                self.pool.append(await stack.enter_async_context(
                    self._client("sems-%s-d%d" % (self.instance, k))))
            log.info("sems %s: connected to %s:%d (%d dispatch connections)", self.instance,
                     self.host, self.port, len(self.pool))
            # messages are handled in paho's callback as the socket is read, not through
            # aiomqtt's queue and an async iterator: half a thousand telemetry messages a
            # second cost a queue entry and a task switch each, and a lease renewal waited
            # behind the whole backlog when the machine was loaded (a standby once learned
            # of the active's lease 33 s late)
            control = [(self.t_lease, 1), (self.t_plan, 1), (self.t_demand, 1)]
            tel = [("v2g/+/telemetry", 0)]
            for c in self.pool:
                c._client.on_message = self._paho_message
            if len(self.pool) > 1:
                # the stations' telemetry on a connection of its own: a demand step or a
                # lease renewal is read at once, not behind a second of telemetry
                await self.pool[-1].subscribe(tel)
                await client.subscribe(control)
            else:
                await client.subscribe(tel + control)
            try:
                period = self.site["period_s"]
                nxt = time.monotonic()
                while not self.stop.is_set():
                    # a late tick is not followed by catch-up ticks back to back
                    nxt = max(nxt + period, time.monotonic())
                    if not all(c._client.is_connected() for c in self.pool):
                        # a dispatch connection went: a new session, not setpoints lost
                        raise aiomqtt.MqttError("a dispatch connection was lost")
                    await self.tick(client)
                    self.wake.clear()
                    try:
                        async with asyncio.timeout(max(0.0, nxt - time.monotonic())):
                            await self.wake.wait()
                    except TimeoutError:
                        pass
            finally:
                self.pool = []
                if self.role == "active":
                    # a clean stop: release so a standby takes over at once
                    await client.publish(self.t_lease, json.dumps(
                        {"holder": self.instance, "epoch": self.epoch, "released": True}),
                        qos=1, retain=True)

    def _paho_message(self, _client, _userdata, m):
        """paho's ``on_message`` (the event loop's thread: aiomqtt reads the socket there).
        Never raises into paho: a handler bug is logged and the message dropped."""
        try:
            self.on_message(m.topic, m.payload)
        except Exception:  # noqa: BLE001 - the reader must go on
            log.exception("sems: message on %s dropped", m.topic)

    async def run(self):
        while not self.stop.is_set():
            try:
                await self.session()
            except aiomqtt.MqttError as e:
                log.warning("sems %s: mqtt: %s; retrying", self.instance, e)
                self.role = "standby"
                await asyncio.sleep(0.5)


# --- command --------------------------------------------------------------------------
def add_arguments(p):
    p.add_argument("action", nargs="?", choices=["run", "status", "check"], default="run",
                   help="run (default): the manager; status: what it is doing; check: "
                   "validate a site file")
    p.add_argument("--site", help="site file (YAML/JSON; docs/sems.md)")
    p.add_argument("--broker", default="127.0.0.1:8883", help="HOST:PORT (TLS 1.3)")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--instance", default="a", help="instance id (HA: one per instance)")
    p.add_argument("--priority", type=float, default=0.0,
                   help="extra seconds this standby waits before taking over")
    p.add_argument("--out", default="out/sems", help="status directory")
    p.add_argument("--json", action="store_true", help="status: one JSON object")
    p.add_argument("--plot", help="status: write site total vs limit over time (PNG)")


def run(args):
    if args.action == "status":
        return status(args)
    if not args.site:
        raise UsageError("--site FILE is required")
    site = load_site(args.site)
    if args.action == "check":
        print("%s: %d stations, limits %s" % (args.site, len(site["stations"]),
                                              site["limits"]))
        return 0
    for k in ("ca", "cert", "key"):
        if not getattr(args, k):
            raise UsageError("--%s is required for run" % k)
    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError("--broker %r: HOST:PORT" % args.broker)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = Sems(site, host, int(port), args.ca, args.cert, args.key, args.instance, args.out,
             args.priority)

    async def go():
        loop = asyncio.get_running_loop()
        def halt():
            s.stop.set()
            s.wake.set()

        loop.add_signal_handler(signal.SIGTERM, halt)
        loop.add_signal_handler(signal.SIGINT, halt)
        await s.run()

    asyncio.run(go())
    return 0


def status(args):
    files = sorted(glob.glob(os.path.join(args.out, "sems-*.json")))
    if not files:
        raise ToolError("%s: no SEMS status files (sems-*.json)" % args.out)
    sts = []
    for f in files:
        with open(f) as fh:
            sts.append(json.load(fh))
    if args.plot:
        plot(args.out, args.plot)
    if args.json:
        print(json.dumps({"instances": sts}))
        return 0
    for s in sts:
        print("%s: %s (holder %s, epoch %d), updated %.1f s ago" % (
            s["instance"], s["role"], s["holder"], s["epoch"], time.time() - s["t"]))
        if "limit_w" in s:
            print("  mode %s  limit %.0f W  planned %.0f W  measured %.0f W  reserve %.0f W"
                  "  headroom %.0f W  stale %d  dropped telemetry %d" % (
                      s["mode"], s["limit_w"], s["planned_w"], s["measured_w"],
                      s["reserve_w"], s["headroom_w"], len(s["stale"]),
                      s["dropped_telemetry"]))
            lag = s.get("telemetry_lag_s")
            if lag:
                print("  telemetry lag p50 %.2f s  max %.2f s  (%d messages)" % (
                    lag["p50"], lag["max"], lag["n"]))
            if s["role"] == "active":
                for sid, sh in sorted(s["shares"].items())[:50]:
                    print("    %-12s %8.0f W (target %8.0f W)" % (sid, sh["p_w"],
                                                                 sh["target_w"]))
                if len(s["shares"]) > 50:
                    print("    ... %d more (--json for all)" % (len(s["shares"]) - 50))
    return 0


def plot(out, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    t0 = None
    for f in sorted(glob.glob(os.path.join(out, "sems-*.csv"))):
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh))
        rows = [r for r in rows if r["role"] == "active" and r["limit_w"]]
        if not rows:
            continue
        t0 = t0 or float(rows[0]["t"])
        t = [float(r["t"]) - t0 for r in rows]
        sign = -1.0
        name = os.path.basename(f)[5:-4]
        ax.plot(t, [float(r["limit_w"]) / 1e3 for r in rows], "r--",
                label="limit (%s)" % name)
        ax.plot(t, [sign * float(r["measured_w"]) / 1e3 for r in rows],
                label="site export measured (%s)" % name)
        ax.plot(t, [sign * float(r["planned_w"]) / 1e3 for r in rows], ":",
                label="planned (%s)" % name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kW (export > 0)")
    ax.legend(fontsize=7)
    ax.grid(True)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
