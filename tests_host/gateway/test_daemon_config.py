"""The daemon's config: every bad key named with its value, refused before anything
starts (exit 2); ``install-unit`` writes the systemd unit."""

import subprocess
import sys

import pytest
from v2g.common import paths
from v2g.gateway import config
from v2g.gateway.config import ConfigError

GOOD = {"link": {"device": "/dev/pts/9"}, "modbus": {"host": "127.0.0.1", "port": 1502}}


def _with(**over):
    import copy

    cfg = copy.deepcopy(GOOD)
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def test_good_config_and_defaults():
    c = config.parse(_with(modbus={"writes": {"enabled": True, "allow": "127.0.0.1, ::1",
                                              "unlock_token": "12345678"}}))
    assert (c.link_device, c.modbus_port, c.modbus_stale_s) == ("/dev/pts/9", 1502, 1.0)
    assert c.writes.allows("127.0.0.1") and c.writes.allows("::1")
    assert not c.writes.allows("10.1.2.3") and not c.writes.allows("nonsense")


@pytest.mark.parametrize("cfg, words", [
    (_with(modbus={"port": 70000}), ["'modbus.port'", "70000", "1..65535"]),
    (_with(modbus={"port": "502"}), ["'modbus.port'", "'502'", "integer"]),
    (_with(modbus={"writes": {"enabled": True, "unlock_token": "short"}}),
     ["'modbus.writes.unlock_token'", "5 characters", "at least 8"]),
    (_with(modbus={"writes": {"enabled": True}}), ["'modbus.writes.unlock_token' is missing"]),
    (_with(modbus={"writes": {"allow": ["127.0.0.1", "300.1.1.1/8"]}}),
     ["'modbus.writes.allow[1]'", "'300.1.1.1/8'"]),
    (_with(modbus={"writes": {"allow": "10.0.0.0/33"}}), ["'modbus.writes.allow[0]'"]),
    (_with(modbus={"prot": 1502}), ["unknown key 'modbus.prot'", "port"]),
    (_with(bogus={"x": 1}), ["unknown key 'bogus'"]),
    ({"modbus": {"port": 1502}}, ["'link.device' is missing"]),
    (_with(log={"level": "loud"}), ["'log.level'", "'loud'"]),
    (_with(link={"hb_timeout_s": 0}), ["'link.hb_timeout_s'", "0"]),
])
def test_bad_config_names_key_and_value(cfg, words):
    with pytest.raises(ConfigError) as e:
        config.parse(cfg, "c.yaml")
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def _v2g(*args):
    env = {"PYTHONPATH": str(paths.HOST_TOOLS_DIR), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "v2g.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_daemon_refuses_to_start_on_a_bad_config(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_text("link: {device: /dev/null}\nmodbus:\n  port: 0\n  writes: "
                 "{enabled: true, unlock_token: abc}\n")
    out = _v2g("daemon", "--config", str(p))
    assert out.returncode == 2
    assert "'modbus.port': value 0 outside 1..65535" in out.stderr
    assert "'modbus.writes.unlock_token': value of 3 characters" in out.stderr
    out = _v2g("daemon", "--config", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_install_unit(tmp_path):
    out = _v2g("daemon", "install-unit", "--dest", str(tmp_path))
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "v2g-daemon.service").read_text()
    assert "ExecStart=" in text and "v2g daemon --config /etc/v2g/config.yaml" in text
    assert "RestartPreventExitStatus=2" in text
    assert _v2g("daemon", "install-unit", "--dest", str(tmp_path / "no")).returncode == 2


def test_modbus_map_lists_40001_and_every_model():
    out = _v2g("modbus", "map")
    assert out.returncode == 0
    assert "| 0 | 40001 | status.contactor_status |" in out.stdout
    for m in (1, 701, 702, 704, 705, 706, 707, 708, 709, 710, 713):
        assert "### Model %d" % m in out.stdout
    assert "RW: `vw_v1_pu` 1.05..1.09 pu" in out.stdout


def _billing_files(tmp_path):
    from v2g.backend import pki

    ca = pki.CA(str(tmp_path / "tls"))
    cert, key = ca.issue("ST-0001", "ST-0001")
    sk = pki.station_signing_key(str(tmp_path / "keys"), str(tmp_path / "pub"), "ST-0001")
    return {"billing": {"station": "ST-0001", "outbox": str(tmp_path / "outbox.sqlite"),
                        "signing_key": sk},
            "mqtt": {"host": "127.0.0.1", "port": 8883, "ca": ca.cert_path, "cert": cert,
                     "key": key}}


def test_billing_sections_validated(tmp_path):
    data = {"link": {"device": "/dev/null"}}
    data.update(_billing_files(tmp_path))
    cfg = config.parse(data, "v2g.yaml")
    assert cfg.billing is not None and cfg.billing.station == "ST-0001"
    assert config.parse({"link": {"device": "/dev/null"}}).billing is None
    bad = dict(data, billing=dict(data["billing"], colour="blue"))
    with pytest.raises(ConfigError, match="billing.colour"):
        config.parse(bad, "v2g.yaml")
    bad = dict(data, mqtt=dict(data["mqtt"], port=70000))
    with pytest.raises(ConfigError, match="mqtt.port"):
        config.parse(bad, "v2g.yaml")
    only = {"link": {"device": "/dev/null"}, "billing": data["billing"]}
    with pytest.raises(ConfigError, match="mqtt"):
        config.parse(only, "v2g.yaml")


def test_daemon_check_tls_subcommand(tmp_path):
    import yaml

    data = {"link": {"device": "/dev/null"}}
    data.update(_billing_files(tmp_path))
    from v2g.backend.broker import free_port

    data["mqtt"]["port"] = free_port()  # nothing listens: REJECTED / refused, exit 1
    path = tmp_path / "v2g.yaml"
    path.write_text(yaml.safe_dump(data))
    r = _v2g("daemon", "check-tls", "--config", str(path))
    assert r.returncode == 1, (r.stdout, r.stderr)
