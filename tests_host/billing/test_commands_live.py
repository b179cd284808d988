"""The publisher's other topics on a live broker: telemetry (QoS 0), a demand answered on
``offer`` and passed on as a setpoint, a valid setpoint passed on, bad ones logged and
dropped."""

import asyncio
import json
import logging
import ssl

import aiomqtt

from v2g.gateway import billing_config
from v2g.gateway.mqtt_publisher import Publisher
from v2g.gateway.outbox import Outbox
from v2g.gateway.signing import make_signer

ST = "ST-0001"
EV = {"soc_pm": 600, "soc_min_pm": 500, "capacity_wh": 60000, "max_discharge_w": 7000,
      "max_charge_w": 7000}


def test_telemetry_demand_offer_and_setpoints(bed, caplog):
    caplog.set_level(logging.WARNING, logger="v2g.billing")
    cfg = billing_config.load(bed.node_config(ST, via_proxy=False))
    cfg.telemetry_s = 0.5
    outbox = Outbox(cfg.outbox, make_signer(cfg.signing_key, ST))
    setpoints = []
    pub = Publisher(cfg, outbox, fw="fw 9.9", on_setpoint=setpoints.append,
                    ev_state=lambda: EV, telemetry=lambda: {"p_w": -7000})
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(bed.ca_path)
    ctx.load_cert_chain(*bed.ledger_cert)

    async def go():
        task = asyncio.create_task(pub.run())
        got = {}
        async with aiomqtt.Client("127.0.0.1", bed.port, identifier="backend-test",
                                  tls_context=ctx, timeout=5) as c:
            await c.subscribe([("v2g/%s/offer" % ST, 1), ("v2g/%s/telemetry" % ST, 0)])
            while not pub.connected:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the publisher's SUBSCRIBE
            t = "v2g/%s/" % ST
            await c.publish(t + "cmd/setpoint", b"{oops", qos=1)
            await c.publish(t + "cmd/setpoint", b'{"p_w": -1000}', qos=1)
            await c.publish(t + "cmd/setpoint", b'{"id": "s1", "p_w": -99999}', qos=1)
            await c.publish(t + "cmd/setpoint", b'{"id": "s2", "p_w": -5000}', qos=1)
            await c.publish(t + "demand", json.dumps(
                {"id": "d1", "export_w": 10000, "duration_s": 3600}), qos=1)
            async with asyncio.timeout(10):
                async for m in c.messages:
                    got.setdefault(str(m.topic).rsplit("/", 1)[1], json.loads(m.payload))
                    if {"offer", "telemetry"} <= set(got):
                        break
        pub.stop()
        await task
        return got

    got = asyncio.run(go())
    outbox.close()
    assert got["offer"] == {"station": ST, "id": "d1", "fw": "fw 9.9", "direction": "export",
                            "p_w": 6000, "energy_wh": 6000.0, "duration_s": 3600}
    tel = got["telemetry"]
    assert tel["station"] == ST and tel["fw"] == "fw 9.9" and tel["seq"] >= 1
    assert setpoints == [{"id": "s2", "p_w": -5000, "q_var": 0},
                         {"id": "demand-d1", "p_w": -6000, "q_var": 0}]
    assert pub.dropped_commands == 3
    text = caplog.text
    assert "not valid JSON" in text and "field 'id' missing" in text
    assert "field 'p_w' -99999: outside the limits -11000..11000" in text
