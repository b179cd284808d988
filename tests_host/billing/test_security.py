"""The broker's door: TLS 1.3 only, client certificates from our CA, the per-station ACL; and
``check_tls`` / ``v2g check-tls`` on good and expired certificates."""

import asyncio
import ssl
import time

import aiomqtt
import pytest

from v2g.backend import pki
from v2g.backend.broker import Broker, free_port
from v2g.backend.ledger import Ledger
from v2g.gateway import billing_config, tls
from v2g.gateway.signing import make_signer

ST1, ST2 = "ST-0001", "ST-0002"


def ctx_for(ca_path, cert=None, max_version=ssl.TLSVersion.TLSv1_3,
            min_version=ssl.TLSVersion.TLSv1_2):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version, ctx.maximum_version = min_version, max_version
    ctx.load_verify_locations(ca_path)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def connects(port, ctx, ident="probe"):
    """True when an MQTT session reaches CONNACK and a round trip (subscribe) works."""
    async def go():
        async with aiomqtt.Client("127.0.0.1", port, identifier=ident, tls_context=ctx,
                                  timeout=1.5) as c:
            await c.subscribe("v2g/%s/energy/ack" % ident, qos=1)
    try:
        asyncio.run(asyncio.wait_for(go(), 2.5))
        return True
    except (aiomqtt.MqttError, OSError, ssl.SSLError, asyncio.TimeoutError):
        return False


def test_only_tls13_with_our_client_certificates(bed, tmp_path):
    ca = bed.ca_path
    good = bed.stations[ST1]["cert"]
    assert connects(bed.port, ctx_for(ca, good), ST1), "control: a valid station connects"
    assert not connects(bed.port, ctx_for(ca), ST1), "anonymous (no client cert) refused"
    other_ca = pki.CA(tmp_path / "other", cn="someone else's CA")
    assert not connects(bed.port, ctx_for(ca, other_ca.issue(ST1, ST1)), ST1), \
        "a client certificate from another CA refused"
    assert not connects(bed.port, ctx_for(ca, good, max_version=ssl.TLSVersion.TLSv1_2), ST1), \
        "TLS 1.2 refused"
    # plain MQTT on the TLS port
    async def plain():
        async with aiomqtt.Client("127.0.0.1", bed.port, identifier="plain", timeout=2):
            pass
    with pytest.raises((aiomqtt.MqttError, OSError, asyncio.TimeoutError)):
        asyncio.run(asyncio.wait_for(plain(), 5))


def test_acl_station_cannot_publish_or_read_under_another(bed):
    from v2g.common.energy_record import EnergyRecord
    bed.start_ledger()
    assert bed.wait_ledger()
    signer2 = make_signer(bed.stations[ST2]["signing_key"], ST2)

    def payload(station, seq):
        r = EnergyRecord(station=station, seq=seq, kind="interval", session=1, t_start=0,
                         t_end=60, import_mwh=0, export_mwh=5000, fw="fw")
        return r.to_payload(signer2.alg, signer2.key_id, signer2.sign(r.canonical_bytes()))

    async def go():
        async with aiomqtt.Client("127.0.0.1", bed.port, identifier=ST2, timeout=5,
                                  tls_context=ctx_for(bed.ca_path, bed.stations[ST2]["cert"])
                                  ) as c:
            # under ST-0001's topics: refused by the ACL (dropped by the broker)
            await c.publish("v2g/%s/energy" % ST1, payload(ST1, 1), qos=1)
            await c.publish("v2g/%s/energy/ack" % ST1, b'{"acked_seq": 99}', qos=1)
            # its own topic: delivered (a barrier: everything before it was processed)
            await c.publish("v2g/%s/energy" % ST2, payload(ST2, 1), qos=1)
    asyncio.run(go())
    assert bed.wait_acked(ST2, 1, timeout=15)
    rep = bed.report()
    assert ST1 not in rep, "nothing under ST-0001 reached the ledger: %r" % rep.get(ST1)
    assert rep[ST2]["records"] == 1

    async def read_ack(ident):
        """What ``ident`` receives on ST-0002's (retained) ack topic within 1.5 s."""
        got = []
        async with aiomqtt.Client("127.0.0.1", bed.port, identifier=ident, timeout=5,
                                  tls_context=ctx_for(bed.ca_path, bed.stations[ident]["cert"])
                                  ) as c:
            await c.subscribe("v2g/%s/energy/ack" % ST2, qos=1)
            try:
                async with asyncio.timeout(1.5):
                    async for m in c.messages:
                        got.append(m.payload)
                        break
            except TimeoutError:
                pass
        return got
    assert asyncio.run(read_ack(ST2)), "control: ST-0002 reads its own ack"
    assert asyncio.run(read_ack(ST1)) == [], "ST-0001 cannot read ST-0002's ack"


def _config(bed, tmp_path, station=ST1, port=None):
    return billing_config.load(bed.node_config(station, via_proxy=False,
                                               **({"port": port} if port else {})))


def test_check_tls_ok_and_expired_client(bed, tmp_path, capsys):
    cfg = _config(bed, tmp_path)
    assert tls.check_tls(cfg) == 0
    out = capsys.readouterr().out
    assert "OK: TLSv1.3" in out
    nb, na = pki.expired_window()
    bed.ca.issue(ST1, ST1, not_before=nb, not_after=na)  # the file is replaced in place
    t0 = time.monotonic()
    assert tls.check_tls(cfg) == 1
    out = capsys.readouterr().out
    assert "REJECTED: Certificate Expired: client certificate subject=CN=ST-0001 expired " \
        + na.strftime("%Y-%m-%dT%H:%M") in out
    assert time.monotonic() - t0 < 2.0
    from v2g import cli
    assert cli.main(["check-tls", "--config", cfg.path]) == 1
    bed.ca.issue(ST1, ST1)  # renewed: the same config works again, nothing restarted
    assert tls.check_tls(cfg) == 0


def test_check_tls_expired_server_certificate(bed, tmp_path, capsys):
    nb, na = pki.expired_window()
    cert = bed.ca.issue("broker-old", "localhost", server=True, not_before=nb, not_after=na)
    port = free_port()
    b = Broker(tmp_path / "old-broker", port, bed.ca_path, *cert).start()
    try:
        cfg = _config(bed, tmp_path, port=port)
        assert tls.check_tls(cfg) == 1
        out = capsys.readouterr().out
        assert "REJECTED: Certificate Expired: server certificate subject=CN=localhost " \
            "expired " + na.strftime("%Y-%m-%dT%H:%M") in out
    finally:
        b.stop()


def test_ledger_never_credits_a_flipped_bit_over_the_broker(bed):
    from v2g.common.energy_record import EnergyRecord
    bed.start_ledger()
    assert bed.wait_ledger()
    signer = make_signer(bed.stations[ST1]["signing_key"], ST1)
    r = EnergyRecord(station=ST1, seq=1, kind="interval", session=1, t_start=0, t_end=60,
                     import_mwh=0, export_mwh=116667, fw="fw")
    good = r.to_payload(signer.alg, signer.key_id, signer.sign(r.canonical_bytes()))
    bad = bytearray(good)
    i = good.index(b"116667") + 5
    bad[i] ^= 0x01  # 116667 -> 116666
    async def go():
        async with aiomqtt.Client("127.0.0.1", bed.port, identifier=ST1, timeout=5,
                                  tls_context=ctx_for(bed.ca_path, bed.stations[ST1]["cert"])
                                  ) as c:
            await c.publish("v2g/%s/energy" % ST1, bytes(bad), qos=1)
    asyncio.run(go())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rep = bed.report().get(ST1)
        if rep and rep["flagged"]:
            break
        time.sleep(0.1)
    assert rep["flagged"] == {"bad_signature": 1} and rep["records"] == 0
    assert rep["credited_wh_export"] == 0
    led = Ledger(bed.db)
    assert led.acked_seq(ST1) == 0
    led.close()
