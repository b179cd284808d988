"""The back-end energy ledger: verify, deduplicate, credit once, acknowledge.

``v2g ledger --db FILE [--json]`` prints credited energy per station and session, gaps,
suppressed duplicates, conflicts and flagged records. ``v2g ledger serve --broker HOST:PORT
--ca CA --cert CERT --key KEY --keys DIR --db FILE`` subscribes to ``v2g/+/energy`` with a
persistent session (MQTT clean_session False, client id ``--client-id``), stores every
record and publishes ``v2g/<station>/energy/ack`` (retained, QoS 1) with the highest
contiguous sequence credited.

Each message has one of these outcomes (``Ledger.ingest``):

- ``new``: signature valid, (station, seq) unseen: stored and credited;
- ``duplicate``: the same (station, seq) with every field and the signature equal: counted
  as a suppressed duplicate, nothing credited;
- ``conflict``: a validly signed record under a (station, seq) range already credited with
  different content: flagged, never credited (the first one stands);
- ``bad_signature`` / ``malformed`` / ``unknown_key`` / ``topic_mismatch``: flagged, never
  credited (a tampered record, an unparseable payload, a station without a public key in
  ``--keys``, a record whose station is not its topic's).

Sequences start at 1; a record the board merged covers ``seq .. seq_last``. Gaps are the
sequence ranges missing below the highest seen.

Schema: plain SQL types (VARCHAR, BIGINT, INTEGER, TEXT, CHAR), composite primary keys, no
autoincrement, no SQLite-only feature; upserts use ``INSERT ... ON CONFLICT ... DO UPDATE``
(SQLite >= 3.24 and PostgreSQL >= 9.5). The same DDL runs unchanged on PostgreSQL; only the
driver's placeholder differs (``?`` here, ``%s`` for psycopg).

Context: host (back end).
"""

import asyncio
import hashlib
import json
import logging
import os
import signal
import sqlite3
import sys
import time

import aiomqtt

from v2g.common.energy_record import RecordError, parse_payload
from v2g.common.errors import UsageError
from v2g.gateway import tls
from v2g.gateway.mqtt_publisher import wait_event
from v2g.gateway.signing import KeyFileError, load_public_key, verify

log = logging.getLogger("v2g.ledger")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ledger_record (
        station       VARCHAR(32)  NOT NULL,
        seq           BIGINT       NOT NULL,
        seq_last      BIGINT       NOT NULL,
        kind          VARCHAR(16)  NOT NULL,
        session_no    BIGINT       NOT NULL,
        t_start       BIGINT       NOT NULL,
        t_end         BIGINT       NOT NULL,
        import_mwh    BIGINT       NOT NULL,
        export_mwh    BIGINT       NOT NULL,
        soc_start_pm  INTEGER,
        soc_end_pm    INTEGER,
        flags         VARCHAR(128) NOT NULL,
        fw            VARCHAR(64)  NOT NULL,
        canonical     TEXT         NOT NULL,
        sig_alg       VARCHAR(16)  NOT NULL,
        signature     VARCHAR(1024) NOT NULL,
        received_ms   BIGINT       NOT NULL,
        PRIMARY KEY (station, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_flagged (
        station        VARCHAR(64)  NOT NULL,
        seq            BIGINT       NOT NULL,
        reason         VARCHAR(32)  NOT NULL,
        detail         VARCHAR(400) NOT NULL,
        payload_sha256 CHAR(64)     NOT NULL,
        payload_hex    TEXT         NOT NULL,
        first_ms       BIGINT       NOT NULL,
        times_seen     INTEGER      NOT NULL,
        PRIMARY KEY (station, seq, payload_sha256)
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_station (
        station               VARCHAR(32) NOT NULL PRIMARY KEY,
        acked_seq             BIGINT      NOT NULL,
        duplicates_suppressed BIGINT      NOT NULL
    )""",
)

FLAGGED = ("conflict", "bad_signature", "malformed", "unknown_key", "topic_mismatch")


class KeyStore:
    """Station public keys from ``DIR/<station>.pub`` (looked up again on a miss, so a new
    station's key is used without a restart)."""

    def __init__(self, directory):
        self.directory = directory
        self._keys = {}

    def get(self, station):
        if station not in self._keys:
            path = os.path.join(self.directory, station + ".pub")
            if not os.path.exists(path):
                return None
            self._keys[station] = load_public_key(path)
        return self._keys[station]


def _topic_station(topic):
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "v2g" and parts[2] == "energy":
        return parts[1]
    return None


class Ledger:
    """The ledger database at ``path``; ``keys`` a ``KeyStore`` (None: report only)."""

    def __init__(self, path, keys=None):
        self.path, self.keys = str(path), keys
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        for ddl in SCHEMA:
            self.db.execute(ddl)

    def close(self):
        self.db.close()

    # --- ingest -------------------------------------------------------------------------
    def ingest(self, topic, payload, now_ms=None):
        """Process one ``energy`` message; returns ``(outcome, station, seq)``."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        tstation = _topic_station(topic) or topic[:64]
        try:
            rec, sig = parse_payload(payload)
        except RecordError as e:
            return self._flag(tstation, -1, "malformed", str(e), payload, now_ms)
        if rec.station != tstation:
            return self._flag(tstation, rec.seq, "topic_mismatch", "record station %r on "
                              "topic %r" % (rec.station, topic), payload, now_ms)
        key = self.keys.get(rec.station) if self.keys else None
        if key is None:
            return self._flag(rec.station, rec.seq, "unknown_key", "no public key for "
                              "station %r" % rec.station, payload, now_ms)
        canon = rec.canonical_bytes()
        if sig["alg"] != "ed25519" or sig["key"] != rec.station or \
                not verify(key, sig["value"], canon):
            return self._flag(rec.station, rec.seq, "bad_signature", "signature does not "
                              "verify with %s's key" % rec.station, payload, now_ms)
        canon_text = canon.decode("ascii")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            outcome = self._store(rec, sig, canon_text, payload, now_ms)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return outcome, rec.station, rec.seq

    def _store(self, rec, sig, canon_text, payload, now_ms):
        db = self.db
        self._ensure_station(rec.station)
        same = db.execute("SELECT canonical, signature FROM ledger_record WHERE station=? "
                          "AND seq=?", (rec.station, rec.seq)).fetchone()
        if same is not None and same[0] == canon_text and same[1] == sig["value"].hex():
            db.execute("UPDATE ledger_station SET duplicates_suppressed = "
                       "duplicates_suppressed + 1 WHERE station=?", (rec.station,))
            return "duplicate"
        overlap = db.execute("SELECT seq, seq_last FROM ledger_record WHERE station=? AND "
                             "seq<=? AND seq_last>=?",
                             (rec.station, rec.seq_last, rec.seq)).fetchone()
        if same is not None or overlap is not None:
            o = same and (rec.seq, rec.seq) or overlap
            self._flag_row(rec.station, rec.seq, "conflict", "differs from the record "
                           "credited for seq %d..%d" % tuple(o), payload, now_ms)
            return "conflict"
        db.execute(
            "INSERT INTO ledger_record (station, seq, seq_last, kind, session_no, t_start, "
            "t_end, import_mwh, export_mwh, soc_start_pm, soc_end_pm, flags, fw, canonical, "
            "sig_alg, signature, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?)",
            (rec.station, rec.seq, rec.seq_last, rec.kind, rec.session, rec.t_start,
             rec.t_end, rec.import_mwh, rec.export_mwh, rec.soc_start_pm, rec.soc_end_pm,
             ",".join(rec.flags), rec.fw, canon_text, sig["alg"], sig["value"].hex(),
             now_ms))
        acked = db.execute("SELECT acked_seq FROM ledger_station WHERE station=?",
                           (rec.station,)).fetchone()[0]
        start = acked
        while True:
            row = db.execute("SELECT seq_last FROM ledger_record WHERE station=? AND seq=?",
                             (rec.station, acked + 1)).fetchone()
            if row is None:
                break
            acked = row[0]
        if acked != start:
            db.execute("UPDATE ledger_station SET acked_seq=? WHERE station=?",
                       (acked, rec.station))
        return "new"

    def _ensure_station(self, station):
        self.db.execute("INSERT INTO ledger_station (station, acked_seq, duplicates_suppressed)"
                        " VALUES (?, 0, 0) ON CONFLICT (station) DO NOTHING", (station,))

    def _flag(self, station, seq, reason, detail, payload, now_ms):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self._flag_row(station, seq, reason, detail, payload, now_ms)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return reason, station, seq

    def _flag_row(self, station, seq, reason, detail, payload, now_ms):
        payload = bytes(payload)
        self.db.execute(
            "INSERT INTO ledger_flagged (station, seq, reason, detail, payload_sha256, "
            "payload_hex, first_ms, times_seen) VALUES (?, ?, ?, ?, ?, ?, ?, 1) "
            "ON CONFLICT (station, seq, payload_sha256) DO UPDATE SET "
            "times_seen = ledger_flagged.times_seen + 1",
            (station[:64], seq, reason, detail[:400], hashlib.sha256(payload).hexdigest(),
             payload[:4096].hex(), now_ms))
        log.warning("ledger: flagged %s seq %s: %s: %s", station, seq, reason, detail)

    def acked_seq(self, station):
        row = self.db.execute("SELECT acked_seq FROM ledger_station WHERE station=?",
                              (station,)).fetchone()
        return row[0] if row else 0

    def stations(self):
        return [r[0] for r in self.db.execute("SELECT station FROM ledger_station "
                                              "ORDER BY station")]

    # --- report -------------------------------------------------------------------------
    def report(self):
        """The CONTRACTS ``v2g ledger --json`` object (plus sessions and flags)."""
        out = {}
        for st, acked, dups in self.db.execute(
                "SELECT station, acked_seq, duplicates_suppressed FROM ledger_station "
                "ORDER BY station").fetchall():
            rows = self.db.execute("SELECT seq, seq_last, session_no, import_mwh, export_mwh,"
                                   " t_start, t_end FROM ledger_record WHERE station=? "
                                   "ORDER BY seq", (st,)).fetchall()
            gaps, expect = [], 1
            sessions = {}
            for seq, last, sess, imp, exp, t0, t1 in rows:
                if seq > expect:
                    gaps.append([expect, seq - 1])
                expect = max(expect, last + 1)
                s = sessions.setdefault(str(sess), {"credited_wh_export": 0,
                                                    "credited_wh_import": 0, "records": 0,
                                                    "t_start": t0, "t_end": t1})
                s["credited_wh_export"] += exp
                s["credited_wh_import"] += imp
                s["records"] += 1
                s["t_start"], s["t_end"] = min(s["t_start"], t0), max(s["t_end"], t1)
            for s in sessions.values():
                s["credited_wh_export"] = s["credited_wh_export"] / 1000.0
                s["credited_wh_import"] = s["credited_wh_import"] / 1000.0
            flagged = {r: n for r, n in self.db.execute(
                "SELECT reason, SUM(times_seen) FROM ledger_flagged WHERE station=? "
                "GROUP BY reason", (st,))}
            out[st] = {
                "credited_wh_export": sum(r[4] for r in rows) / 1000.0,
                "credited_wh_import": sum(r[3] for r in rows) / 1000.0,
                "records": len(rows),
                "duplicates_suppressed": dups,
                "gaps": gaps,
                "acked_seq": acked,
                "conflicts": flagged.pop("conflict", 0),
                "flagged": flagged,
                "sessions": sessions,
            }
        # messages flagged under a station that never had a valid record
        for st, reason, n in self.db.execute(
                "SELECT station, reason, SUM(times_seen) FROM ledger_flagged GROUP BY station, "
                "reason ORDER BY station"):
            if st not in out:
                out[st] = {"credited_wh_export": 0.0, "credited_wh_import": 0.0, "records": 0,
                           "duplicates_suppressed": 0, "gaps": [], "acked_seq": 0,
                           "conflicts": 0, "flagged": {}, "sessions": {}}
                if reason == "conflict":
                    out[st]["conflicts"] = n
                else:
                    out[st]["flagged"][reason] = n
        return {"stations": out}


def format_report(rep):
    """Human-readable lines of ``Ledger.report()``."""
    lines = []
    for st, s in rep["stations"].items():
        lines.append("station %s: credited export %.3f Wh, import %.3f Wh, %d records, "
                     "acked to seq %d" % (st, s["credited_wh_export"], s["credited_wh_import"],
                                          s["records"], s["acked_seq"]))
        for sess, v in s["sessions"].items():
            lines.append("  session %s: export %.3f Wh, import %.3f Wh, %d records" % (
                sess, v["credited_wh_export"], v["credited_wh_import"], v["records"]))
        lines.append("  gaps: %s" % (", ".join("%d..%d" % tuple(g) for g in s["gaps"])
                                      or "none"))
        lines.append("  duplicates suppressed: %d, conflicts: %d, flagged: %s" % (
            s["duplicates_suppressed"], s["conflicts"],
            ", ".join("%s %d" % kv for kv in sorted(s["flagged"].items())) or "none"))
    return "\n".join(lines) if lines else "no records"


# --- serve ------------------------------------------------------------------------------

def _ack_payload(station, acked, n):
    return json.dumps({"station": station, "acked_seq": acked, "id": n})


async def serve(host, port, files, keys_dir, db_path, client_id="ledger", stop=None,
                backoff_max_s=2.0):
    """Subscribe, ingest and acknowledge until ``stop`` (an asyncio.Event) is set."""
    ledger = Ledger(db_path, KeyStore(keys_dir))
    stop = stop or asyncio.Event()
    backoff = 0.2
    published = {}  # station -> (acked, monotonic time of the last ack publish)
    acks_sent = 0
    try:
        while not stop.is_set():
            try:
                ctx = tls.client_context(files)
                async with aiomqtt.Client(hostname=host, port=port, identifier=client_id,
                                          tls_context=ctx, clean_session=False,
                                          keepalive=15, timeout=10) as client:
                    log.info("ledger: connected to %s:%d as %s", host, port, client_id)
                    backoff = 0.2
                    await client.subscribe("v2g/+/energy", qos=1)
                    for st in ledger.stations():
                        acks_sent += 1
                        await client.publish("v2g/%s/energy/ack" % st, _ack_payload(
                            st, ledger.acked_seq(st), acks_sent), qos=1, retain=True)
                        published[st] = (ledger.acked_seq(st), time.monotonic())
                    stopper = asyncio.create_task(stop.wait())
                    it = client.messages.__aiter__()
                    while True:
                        nxt = asyncio.create_task(it.__anext__())
                        done, _ = await asyncio.wait({nxt, stopper},
                                                     return_when=asyncio.FIRST_COMPLETED)
                        if stopper in done:
                            nxt.cancel()
                            return
                        msg = nxt.result()
                        outcome, st, seq = ledger.ingest(str(msg.topic), msg.payload)
                        if outcome not in ("new", "duplicate") or st not in ledger.stations():
                            continue
                        acked = ledger.acked_seq(st)
                        last = published.get(st, (-1, 0.0))
                        if acked != last[0] or time.monotonic() - last[1] > 1.0:
                            acks_sent += 1
                            await client.publish("v2g/%s/energy/ack" % st, _ack_payload(
                                st, acked, acks_sent), qos=1, retain=True)
                            published[st] = (acked, time.monotonic())
            except (aiomqtt.MqttError, OSError, tls.CertificateExpired,
                    tls.TlsRejected) as e:
                exp = tls.explain(e, files, host, port)
                log.warning("ledger: %s; retry in %.1f s", exp or e, backoff)
                await wait_event(stop, backoff)
                backoff = min(backoff * 2, backoff_max_s)
    finally:
        ledger.close()


# --- command ----------------------------------------------------------------------------

def add_arguments(p):
    p.add_argument("action", nargs="?", choices=["report", "serve"], default="report",
                   help="report (default): print the ledger; serve: run the ledger")
    p.add_argument("--db", required=True, help="ledger database (SQLite file)")
    p.add_argument("--json", action="store_true", help="report as one JSON object")
    p.add_argument("--broker", help="serve: HOST:PORT of the broker (TLS 1.3)")
    p.add_argument("--ca", help="serve: CA bundle the broker's certificate chains to")
    p.add_argument("--cert", help="serve: the ledger's client certificate (PEM)")
    p.add_argument("--key", help="serve: its private key (PEM, mode 0600)")
    p.add_argument("--keys", help="serve: folder of station public keys <station>.pub")
    p.add_argument("--client-id", default="ledger", help="serve: MQTT client id (persistent "
                   "session)")
    p.add_argument("--log-level", default="INFO")


def run(args):
    if args.action == "report":
        if not os.path.exists(args.db):
            raise UsageError("--db %s: no such file" % args.db)
        ledger = Ledger(args.db)
        rep = ledger.report()
        ledger.close()
        print(json.dumps(rep, sort_keys=True) if args.json else format_report(rep))
        return 0
    for opt in ("broker", "ca", "cert", "key", "keys"):
        if not getattr(args, opt):
            raise UsageError("ledger serve: --%s is required" % opt)
    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError("--broker %r: HOST:PORT expected (port 1..65535)" % args.broker)
    if not os.path.isdir(args.keys):
        raise UsageError("--keys %s: not a folder" % args.keys)
    # errors name --ca / --cert / --key
    files = tls.TlsFiles(ca=args.ca, cert=args.cert, key=args.key, what="--")
    try:
        tls.client_context(files)
    except (KeyFileError, tls.CertificateExpired) as e:
        raise UsageError(str(e)) from None
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        await serve(host, int(port), files, args.keys, args.db, args.client_id, stop)

    asyncio.run(main())
    return 0
