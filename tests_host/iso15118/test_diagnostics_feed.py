"""The SECC's message timeouts feed the handshake-timeout and V2G-502 counters: Josev's
timeout log line during the negotiation -> ``Station`` counts a handshake timeout and a
lost message; above the loss threshold ``V2G-502``; both go to the status file (``v2g
status --daemon-status``) and to the CSMS as NotifyEvent (component ``ISO15118Ctrlr``).
No JVM: the station is built but its SECC not started.
"""

import asyncio
import json
import logging

import pytest

pytest.importorskip("iso15118")

from support.virtual_board import v2g  # noqa: E402
from v2g.gateway.firmware_model import FirmwareModel  # noqa: E402
from v2g.gateway.ocpp_client import OcppSettings, StationOcpp  # noqa: E402
from v2g.gateway.station import Events, Station, _SdpLogTap  # noqa: E402

TIMEOUT_LINE = ("TimeoutError occurred. Waited for 2.0 s after sending last message: "
                "ServiceDiscoveryRes")


def test_timeouts_feed_counters_status_and_ocpp(tmp_path, capsys):
    async def run():
        fw = FirmwareModel()
        events = Events()
        st = Station({"message_loss": {"min_messages": 4, "threshold_pct": 5.0}}, fw,
                     "lo", events, status_path=str(tmp_path / "iso.json"))
        st.ocpp = StationOcpp(OcppSettings(), st.mapping, st.ctl, fw, events)
        tap = _SdpLogTap(events)
        lg = logging.getLogger("iso15118.shared.comm_session")

        def josev(msg):
            tap.handle(lg.makeRecord(lg.name, logging.ERROR, __file__, 0, msg, (), None))

        josev("SDPRequest received from ('fe80::1', 15118)")
        for state in ("SupportedAppProtocol", "SessionSetup", "AuthorizationSetup"):
            await st.ctl.set_present_protocol_state(state)
        josev(TIMEOUT_LINE)
        josev("Stopping: " + TIMEOUT_LINE)  # Josev logs it again: one timeout counted
        await st.ctl.session_ended("ServiceDiscovery", TIMEOUT_LINE)
        return st

    st = asyncio.run(run())
    f = st.figures
    assert f["handshake_timeouts"] == 1 and f["messages_lost"] == 1 and f["v2g_502"] == 1
    assert f["messages"] == 3 and f["sessions"] == 1
    notes = [(i["action"], i["payload"]["event_data"][0]["variable"]["name"],
              i["payload"]["event_data"][0]["actual_value"])
             for i in st.ocpp.outbox if i["action"] == "NotifyEvent"]
    assert ("NotifyEvent", "HandshakeTimeouts", "1") in notes, notes
    assert any(n[1] == "MessageLossFault" and n[2].startswith("V2G-502") for n in notes)
    out = capsys.readouterr().out
    assert '"event": "fault", "code": "V2G-502"' in out
    d = json.loads((tmp_path / "iso.json").read_text())
    assert d["handshake_timeouts"] == 1 and d["v2g_502"] == 1
    r = v2g("status", "--daemon-status", tmp_path / "iso.json")
    assert r.returncode == 0, r.stderr
    assert "handshake timeouts 1  V2G-502 1" in r.stdout, r.stdout


def test_a_timeout_in_the_charge_loop_is_no_handshake_timeout(tmp_path):
    async def run():
        events = Events()
        st = Station({}, FirmwareModel(), "lo", events)
        events("sdp")
        events("charge_loop", target_w=0.0)
        st.on_timeout(TIMEOUT_LINE)
        return st

    st = asyncio.run(run())
    assert st.figures["handshake_timeouts"] == 0 and st.figures["messages_lost"] == 1
