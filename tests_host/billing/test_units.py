"""Billing pieces without a broker: record model, signing keys, outbox, ledger, config,
commands. Fast (no processes)."""

import json
import logging
import os
import sqlite3

import pytest
import yaml

from v2g.backend import pki
from v2g.backend.ledger import SCHEMA, KeyStore, Ledger
from v2g.common.energy_record import EnergyRecord, RecordError, from_link, parse_payload
from v2g.gateway import billing_config, commands
from v2g.gateway.outbox import Outbox
from v2g.gateway.record_source import ProfileSource
from v2g.gateway.signing import KeyFileError, make_signer

ST = "ST-0001"


def rec(seq=1, **kw):
    d = dict(station=ST, seq=seq, kind="interval", session=1, t_start=1000 + 60 * seq,
             t_end=1060 + 60 * seq, import_mwh=0, export_mwh=1000 * seq, fw="fw 1.0",
             soc_start_pm=800, soc_end_pm=790)
    d.update(kw)
    return EnergyRecord(**d)


@pytest.fixture
def keys(tmp_path):
    path = pki.station_signing_key(tmp_path / "keys", tmp_path / "pub", ST)
    return make_signer(path, ST), KeyStore(str(tmp_path / "pub"))


def signed(signer, r):
    return r.to_payload(signer.alg, signer.key_id, signer.sign(r.canonical_bytes()))


# --- record model ------------------------------------------------------------------------

def test_record_roundtrip_and_canonical_bytes():
    r = rec(5, flags=("merged", "power_cut"), seq_last=7)
    payload = r.to_payload("ed25519", ST, b"\x01" * 64)
    back, sig = parse_payload(payload)
    assert back == r and sig["value"] == b"\x01" * 64
    assert r.canonical_bytes().startswith(b"v2g-energy-record/1\n{")
    assert b", " not in r.canonical_bytes() and b": " not in r.canonical_bytes()


@pytest.mark.parametrize("field,value,needle", [
    ("station", "ST/1", "station"), ("seq", 0, "seq"), ("export_mwh", -1, "export_mwh"),
    ("kind", "bogus", "kind"), ("flags", ("nope",), "flags"),
    ("soc_end_pm", 1001, "soc_end_pm"),
    ("fw", "", "fw"), ("t_end", 0, "t_end"),
])
def test_record_validation_names_field(field, value, needle):
    kw = {"seq": 3, field: value}
    with pytest.raises(RecordError, match=needle):
        rec(**kw)


def test_from_link_today_and_extended():
    r = from_link({"record_no": 4, "session_id": 2, "t_start_s": 10, "t_end_s": 70,
                   "import_mwh": 0, "export_mwh": 5}, ST, "fw 2")
    assert (r.seq, r.seq_last, r.kind, r.soc_start_pm, r.flags) == (4, 4, "interval", None, ())
    r = from_link({"record_no": 4, "seq_last": 6, "session_id": 2, "t_start_s": 10,
                   "t_end_s": 70, "import_mwh": 0, "export_mwh": 5, "kind": 2, "flags": 5,
                   "soc_start_pm": 500, "soc_end_pm": 0xFFFF}, ST, "fw 2")
    assert (r.seq_last, r.kind, r.flags, r.soc_start_pm, r.soc_end_pm) == \
        (6, "session_end", ("merged", "power_cut"), 500, None)


# --- signing keys -----------------------------------------------------------------------

def test_key_readable_by_others_refused(tmp_path):
    path = pki.station_signing_key(tmp_path / "k", tmp_path / "p", ST)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644.*0600") as e:
        make_signer(path, ST)
    assert str(path) in str(e.value)
    with pytest.raises(KeyFileError, match="no such file"):
        make_signer(str(tmp_path / "missing.key"), ST)


def test_key_never_logged(keys, tmp_path, caplog):
    signer, _ = keys
    caplog.set_level(logging.DEBUG)
    ob = Outbox(tmp_path / "o.sqlite", signer)
    ob.store(rec(1))
    key_pem = open(tmp_path / "keys" / (ST + ".ed25519")).read()
    body = key_pem.splitlines()[1]
    assert body not in caplog.text and body not in repr(signer)


# --- outbox -------------------------------------------------------------------------------

def test_outbox_store_once_send_ack_and_survives_reopen(keys, tmp_path):
    signer, _ = keys
    path = tmp_path / "outbox.sqlite"
    ob = Outbox(path, signer)
    assert ob._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    for k in range(1, 6):
        assert ob.store(rec(k)) == "new"
    assert ob.store(rec(3)) == "exists"
    assert ob.store(rec(3, export_mwh=1)) == "conflict"
    assert [s for s, _ in ob.pending(ST, 3)] == [1, 2, 3]
    ob.mark_sent(ST, [1, 3])   # only PUBACKed ones; order of pending kept
    assert [s for s, _ in ob.pending(ST)] == [2, 4, 5]
    ob.close()
    ob = Outbox(path, signer)  # restart: rows and their state are still there
    assert ob.unacked(ST) == 5 and ob.sent_unacked(ST) == 2
    assert ob.requeue_sent(ST) == 2
    assert [s for s, _ in ob.pending(ST)] == [1, 2, 3, 4, 5]
    assert ob.apply_ack(ST, 3) == 3 and ob.unacked(ST) == 2
    assert ob.apply_ack(ST, 2) == 0 and ob.acked(ST) == 3  # acks never move backwards
    assert ob.store(rec(2)) == "exists"  # already billed
    assert ob.max_seq(ST) == 5


def test_outbox_payload_is_byte_identical_on_resend(keys, tmp_path):
    signer, store = keys
    ob = Outbox(tmp_path / "o.sqlite", signer)
    ob.store(rec(1))
    p1 = ob.pending(ST)[0][1]
    ob.mark_sent(ST, [1])
    ob.requeue_sent(ST)
    assert ob.pending(ST)[0][1] == p1
    led = Ledger(tmp_path / "l.sqlite", store)
    assert led.ingest("v2g/%s/energy" % ST, p1)[0] == "new"
    assert led.ingest("v2g/%s/energy" % ST, p1)[0] == "duplicate"


# --- ledger -------------------------------------------------------------------------------

def test_ledger_three_outcomes_gaps_and_ack(keys, tmp_path):
    signer, store = keys
    led = Ledger(tmp_path / "l.sqlite", store)
    topic = "v2g/%s/energy" % ST
    for k in (1, 2, 3, 6):
        assert led.ingest(topic, signed(signer, rec(k)))[0] == "new"
    assert led.acked_seq(ST) == 3
    assert led.ingest(topic, signed(signer, rec(2)))[0] == "duplicate"
    assert led.ingest(topic, signed(signer, rec(2, export_mwh=7)))[0] == "conflict"
    merged = rec(4, seq_last=5, flags=("merged",))
    assert led.ingest(topic, signed(signer, merged))[0] == "new"
    assert led.acked_seq(ST) == 6
    assert led.ingest(topic, signed(signer, rec(5)))[0] == "conflict"  # inside 4..5
    assert led.ingest(topic, signed(signer, rec(9)))[0] == "new"
    rep = led.report()["stations"][ST]
    assert rep["records"] == 6 and rep["duplicates_suppressed"] == 1
    assert rep["gaps"] == [[7, 8]] and rep["conflicts"] == 2
    assert rep["credited_wh_export"] == (1000 + 2000 + 3000 + 6000 + 4000 + 9000) / 1000
    assert set(rep) >= {"credited_wh_export", "credited_wh_import", "records",
                        "duplicates_suppressed", "gaps"}
    assert rep["sessions"]["1"]["records"] == 6


def test_ledger_every_single_bit_flip_is_flagged_never_credited(keys, tmp_path):
    signer, store = keys
    led = Ledger(tmp_path / "l.sqlite", store)
    topic = "v2g/%s/energy" % ST
    good = signed(signer, rec(1, flags=("power_cut",)))
    outcomes = {}
    for i in range(len(good) * 8):
        bad = bytearray(good)
        bad[i // 8] ^= 1 << (i % 8)
        o = led.ingest(topic, bytes(bad))[0]
        outcomes[o] = outcomes.get(o, 0) + 1
    assert "new" not in outcomes and "duplicate" not in outcomes, outcomes
    assert outcomes.get("bad_signature", 0) > 0
    assert led.report()["stations"][ST]["records"] == 0
    assert led.ingest(topic, good)[0] == "new"


def test_ledger_topic_mismatch_and_unknown_key(keys, tmp_path):
    signer, store = keys
    led = Ledger(tmp_path / "l.sqlite", store)
    assert led.ingest("v2g/ST-0002/energy", signed(signer, rec(1)))[0] == "topic_mismatch"
    other = rec(1, station="ST-0009")
    assert led.ingest("v2g/ST-0009/energy", signed(signer, other))[0] == "unknown_key"
    assert led.report()["stations"].get(ST, {"records": 0})["records"] == 0


def test_ledger_schema_is_plain_sql():
    """No SQLite-only constructs in the DDL (it runs unchanged on PostgreSQL)."""
    ddl = " ".join(SCHEMA).upper()
    for word in ("AUTOINCREMENT", "WITHOUT ROWID", "STRICT", "BLOB", "ROWID", "PRAGMA"):
        assert word not in ddl
    db = sqlite3.connect(":memory:")
    for s in SCHEMA:
        db.execute(s)


def test_ledger_json_command(keys, tmp_path, capsys):
    from v2g import cli
    signer, store = keys
    led = Ledger(tmp_path / "l.sqlite", store)
    led.ingest("v2g/%s/energy" % ST, signed(signer, rec(1)))
    led.close()
    assert cli.main(["ledger", "--db", str(tmp_path / "l.sqlite"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["stations"][ST]["credited_wh_export"] == 1.0
    assert cli.main(["ledger", "--db", str(tmp_path / "nope.sqlite")]) == 2


# --- config and commands ----------------------------------------------------------------

@pytest.fixture
def config_files(tmp_path):
    ca = pki.CA(tmp_path / "tls")
    cert, key = ca.issue(ST, ST)
    sk = pki.station_signing_key(tmp_path / "keys", tmp_path / "pub", ST)
    data = {"billing": {"station": ST, "outbox": str(tmp_path / "o.sqlite"),
                        "signing_key": sk},
            "mqtt": {"host": "127.0.0.1", "port": 8883, "ca": ca.cert_path, "cert": cert,
                     "key": key},
            "link": {"device": "/dev/null"}}  # other sections are the daemon's
    return tmp_path, data


def write(tmp_path, data):
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_config_ok(config_files):
    tmp_path, data = config_files
    cfg = billing_config.load(write(tmp_path, data))
    assert cfg.station == ST and cfg.port == 8883 and cfg.tls.cert.endswith(ST + ".pem")


@pytest.mark.parametrize("section,key,value,needle", [
    ("billing", "station", "ST/01", "billing.station"),
    ("billing", "signing_key", "/nonexistent/k", "billing.signing_key /nonexistent/k: no such"),
    ("mqtt", "cert", "/nonexistent/c.pem", "mqtt.cert /nonexistent/c.pem: no such"),
    ("mqtt", "port", 70000, "mqtt.port: 70000 outside"),
    ("mqtt", "bogus", 1, "mqtt.bogus: unknown"),
])
def test_config_errors_name_key_and_value(config_files, section, key, value, needle):
    tmp_path, data = config_files
    data[section][key] = value
    with pytest.raises(billing_config.ConfigError, match=needle.replace(".", r"\.")):
        billing_config.load(write(tmp_path, data))


def test_config_refuses_open_keys(config_files):
    tmp_path, data = config_files
    os.chmod(data["mqtt"]["key"], 0o640)
    with pytest.raises(billing_config.ConfigError, match="mqtt.key .*mode 0640"):
        billing_config.load(write(tmp_path, data))
    os.chmod(data["mqtt"]["key"], 0o600)
    os.chmod(data["billing"]["signing_key"], 0o604)
    with pytest.raises(billing_config.ConfigError, match="billing.signing_key .*mode 0604"):
        billing_config.load(write(tmp_path, data))


def test_config_unreadable_file(tmp_path):
    with pytest.raises(billing_config.ConfigError, match="no such file"):
        billing_config.load(str(tmp_path / "none.yaml"))


class _Cfg:
    station, max_export_w, max_import_w, max_q_var = ST, 11000, 7000, 5000


@pytest.mark.parametrize("payload,needle", [
    (b"{not json", "not valid JSON"),
    (b'{"p_w": 100}', "field 'id' missing"),
    (b'{"id": "a", "p_w": -20000}', "field 'p_w' -20000: outside the limits -11000..7000"),
    (b'{"id": "a", "p_w": 0, "q_var": 9000}', "field 'q_var' 9000"),
    (b'{"id": "a", "p_w": "1"}', "field 'p_w' '1': a number"),
    (b'{"id": "a", "p_w": 1, "x": 1}', "unknown field"),
    (b'{"id": "a", "p_w": 1, "station": "ST-0002"}', "field 'station'"),
])
def test_setpoint_errors(payload, needle):
    with pytest.raises(commands.CommandError, match=needle.replace("(", r"\(")):
        commands.parse_setpoint(payload, _Cfg)


def test_demand_and_offer():
    d = commands.parse_demand(b'{"id": "d1", "export_w": 10000, "duration_s": 3600}', _Cfg)
    ev = {"soc_pm": 600, "soc_min_pm": 500, "capacity_wh": 60000, "max_discharge_w": 7000,
          "max_charge_w": 7000}
    # 10 % of 60 kWh above the floor = 6 kWh over 1 h -> 6 kW (below the 7 kW limit)
    assert commands.make_offer(d, ev) == {"p_w": 6000, "energy_wh": 6000.0}
    assert commands.make_offer(d, None)["p_w"] == 0
    with pytest.raises(commands.CommandError, match="export_w.*20000"):
        commands.parse_demand(b'{"id": 1, "export_w": 20000, "duration_s": 60}', _Cfg)
    with pytest.raises(commands.CommandError, match="exactly one"):
        commands.parse_demand(b'{"id": 1, "duration_s": 60}', _Cfg)


def test_record_source_totals_match_records():
    src = ProfileSource(ST, 50)
    recs = [src.record(k) for k in range(1, 51)]
    assert recs[0].kind == "session_start" and recs[-1].kind == "session_end"
    assert sum(r.export_mwh for r in recs) / 1000.0 == src.metered()["wh_export"]
    assert any("power_cut" in r.flags for r in recs)
