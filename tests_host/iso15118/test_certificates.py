"""Expired certificates: ``REJECTED: Certificate Expired`` in the daemon log, a
SecurityEventNotification to the CSMS, the authorization refused (no energy)."""

import asyncio
import logging
import socket

import pytest

pytest.importorskip("ocpp")

from iso15118.shared.messages.enums import AuthorizationStatus, Protocol  # noqa: E402
from v2g.gateway import csms, pki, station  # noqa: E402
from v2g.gateway.firmware_model import FirmwareModel  # noqa: E402
from v2g.gateway.iso15118_secc import ProductEVSEController  # noqa: E402
from v2g.gateway.ocpp_client import OcppSettings, StationOcpp  # noqa: E402
from v2g.gateway.session import SessionMapping  # noqa: E402


def test_expired_secc_certificate(tmp_path, caplog):
    pki.make_cert(tmp_path / "ok.pem", tmp_path / "ok.key", valid_s=3600)
    pki.make_cert(tmp_path / "old.pem", tmp_path / "old.key", valid_s=1)  # short-lived
    assert pki.check_cert(tmp_path / "ok.pem") is None

    async def main():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        rec = csms.Record()
        server = await csms.serve(port, ["2.1"], None, rec)
        fw = FirmwareModel().start()
        mapping = SessionMapping(fw)
        ctl = ProductEVSEController(mapping)
        ctl.set_selected_protocol(Protocol.ISO_15118_20_AC)
        st = StationOcpp(OcppSettings(url="ws://127.0.0.1:%d" % port), mapping, ctl, fw)
        await st.start()
        await asyncio.sleep(1.2)  # the 1 s certificate has expired now
        with caplog.at_level(logging.ERROR):
            station.check_certificates({"secc_cert": str(tmp_path / "old.pem")}, ctl, st)
        auth = await ctl.is_authorized()
        ready = ctl.ready_to_charge()
        await st.stop()
        await fw.close()
        server.close()
        return rec, auth, ready, fw

    rec, auth, ready, fw = asyncio.run(main())
    assert "REJECTED: Certificate Expired" in caplog.text
    assert auth.authorization_status == AuthorizationStatus.REJECTED and not ready
    sec = [m[1] for m in rec.messages if m[0] == "SecurityEventNotification"]
    assert sec and sec[0]["tech_info"].startswith("REJECTED: Certificate Expired")
    assert fw.applied == [] and fw.export_mwh == 0
