"""Josev's EVCC simulator (the car) against the daemon's SECC with the product's EVSE
controller, over SDP and TCP between two network namespaces joined by a veth pair.

Needs root and iproute2 (SDP is IPv6 link-local multicast; loopback does not carry it);
skipped with the reason where they are missing. Each session starts a JVM on both sides
(Josev's EXI codec): about 10-20 s per test on a busy 2-core machine.
"""

import pytest

pytest.importorskip("iso15118")

import shutil  # noqa: E402

from support.iso_evcc import run_session  # noqa: E402
from v2g.gateway import netns, pki  # noqa: E402

ok, why = netns.available()
if ok and shutil.which("java") is None:
    ok, why = False, "java missing (Josev's EXI codec; `make tools` installs a JRE)"
pytestmark = pytest.mark.skipif(not ok, reason=why)


@pytest.fixture(scope="module")
def pair():
    with netns.VethPair() as p:
        yield p


def _kinds(events):
    return [e["event"] for e in events]


@pytest.mark.parametrize("service,mode", [("AC_BPT", "dynamic"), ("DC_BPT", "scheduled")])
def test_bpt_session_exports_at_the_csms_setpoint(pair, service, mode):
    events, err, ev_log, rc = run_session(
        pair, {"iso15118": {"control_mode": mode}, "csms_setpoint_w": -7000}, service,
        loops=12)
    kinds = _kinds(events)
    assert rc == 0, err[-3000:]
    for k in ("sdp", "energy_start", "energy", "energy_stop", "contactors_open",
              "session_ended"):
        assert k in kinds, (k, kinds)
    summary = events[-1]
    targets = summary["ev_targets"]
    # the car's SoC starts below its own floor (simulator: 10 %, floor 30 %): no discharge
    # until it is above; then every loop -7000 W
    assert targets and set(targets) <= {0.0, -7000.0}, targets
    assert targets[-1] == -7000.0
    first = targets.index(-7000.0)
    assert all(t == -7000.0 for t in targets[first:])
    assert summary["exported_mwh"] > 0 and summary["imported_mwh"] == 0
    applied = summary["applied"]
    assert ["session", 0, 1] in applied  # contactors opened through the firmware
    assert summary["modes"] == [[service, mode]]


def test_weak_plc_link_refuses_the_handshake(pair):
    events, err, ev_log, rc = run_session(
        pair, {"modem": {"link_quality_dbm": -70}}, "AC_BPT", ev=False, timeout=40)
    assert "handshake_refused" in _kinds(events)
    assert "REFUSED ISO 15118 handshake: PLC link quality -70.0 dBm below -65.0 dBm" in err
    assert events[-1]["modem"]["refused"] == 1


def _tls_session(pair, tmp_path, car_pki, ev_timeout=None, timeout=70):
    charger_pki = tmp_path / "charger-pki"
    if not charger_pki.exists():
        pki.make_iso15118_pki(str(charger_pki))
    car = charger_pki if car_pki is None else car_pki
    return run_session(
        pair, {"csms_setpoint_w": -7000, "enforce_tls": True, "tls_1_3": True,
               "pki_path": str(charger_pki)}, "AC_BPT", loops=8, timeout=timeout,
        ev_env={"PKI_PATH": str(car) + "/", "ENABLE_TLS_1_3": "True"},
        ev_cfg={"useTls": True, "enforceTls": True}, ev_timeout=ev_timeout)


def test_tls_1_3_mutual_authentication(pair, tmp_path):
    """TLS 1.3 both ways: the car verifies the SECC chain against its V2G root, the SECC
    verifies the car's OEM provisioning chain against the OEM root."""
    events, err, ev_log, rc = _tls_session(pair, tmp_path, None)
    assert rc == 0, err[-3000:]
    tls = [e for e in events if e["event"] == "tls"]
    assert tls, ([e["event"] for e in events], ev_log[-2000:])
    assert tls[0]["version"] == "TLSv1.3" and tls[0]["peer"] == "OEM leaf", tls
    assert "tcp_plain" not in _kinds(events)
    assert "energy" in _kinds(events), _kinds(events)
    assert events[-1]["exported_mwh"] > 0


def test_tls_car_with_an_untrusted_certificate_gets_no_session(pair, tmp_path):
    """A car that trusts the charger (same V2G root) but whose OEM provisioning chain
    comes from another PKI: the SECC refuses its certificate, no session, no energy."""
    other = tmp_path / "car-pki"
    pki.make_iso15118_pki(str(other))
    pki.make_iso15118_pki(str(tmp_path / "charger-pki"))
    shutil.copy(tmp_path / "charger-pki/iso15118_2/certs/v2gRootCACert.pem",
                other / "iso15118_2/certs/v2gRootCACert.pem")
    events, err, ev_log, rc = _tls_session(pair, tmp_path, other, ev_timeout=20, timeout=35)
    kinds = _kinds(events)
    assert "tls" not in kinds and "energy" not in kinds and "energy_start" not in kinds, kinds
    # the car verified the charger and sent its certificate; the SECC's verification of it
    # failed (no connection reached the SECC: no ``tls`` event)
    assert "Starting TLS client" in ev_log, ev_log[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" not in ev_log, ev_log[-2000:]
