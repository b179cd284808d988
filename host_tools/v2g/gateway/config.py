"""The daemon's config file (YAML), validated before anything starts.

Keys (unknown keys are refused at every level)::

    link:
      device: /dev/pts/5        # required: the UART to the real-time controller
      baudrate: 115200          # 1200 .. 4000000
      hb_timeout_s: 1.0         # no valid frame this long: link LOST (0.2 .. 60 s)
      service_socket: /run/v2g/link-service.sock  # optional: relays the board's update
                                # service to local tools (`v2g update --link SOCKET`)
    modbus:
      host: 127.0.0.1           # address the server binds to
      port: 1502                # 1 .. 65535
      unit_id: 1                # Modbus unit (device) id answered, 0 .. 247 (0 = any)
      stale_s: 1.0              # an image older than this reads as stale (0.1 .. 60 s)
      writes:
        enabled: false          # no write is ever applied unless true
        allow: [127.0.0.1, 192.168.10.0/24]   # client addresses or networks allowed to write
        unlock_token: "change-me-please"      # >= 8 characters, written to the unlock register
        unlock_s: 300           # an unlock lasts this long on that connection (1 .. 86400 s)
    device:
      serial: "V2G-0001"        # SunSpec model 1 serial number (<= 32 characters)
    log:
      level: info               # debug | info | warning | error
    station:                    # optional: the ISO 15118 SECC and OCPP client in the daemon
      iface: eth1               # the interface the car's PLC modem is on (SDP, IPv6)
      config: /etc/v2g/station.json   # the station's JSON (v2g.gateway.station: iso15118,
                                      # ocpp, modem, message_loss, ... unknown keys refused)
      status_path: /run/v2g/iso15118.json   # figures for `v2g status --daemon-status`
    billing: {...}              # optional, with mqtt: the billing leg (billing_config)
    mqtt: {...}
    sems:                       # optional, with billing/mqtt: the SEMS hold (sems_hold)
      hold_s: 5.0               # no SEMS heartbeat this long: safe local limit (0.5 .. 3600 s)
      fallback_lead_s: 0.0      # start the fallback this much earlier (the station's time
                                # to reach its safe limit; below hold_s)
      safe_export_w: 0          # the safe local limit: export at most (0 .. 1e6 W)
      safe_import_w: 0          # ... and import at most (0 .. 1e6 W)
      site: depot-1             # heartbeat of this site only (default: any site, +)
    sim_ev:                     # optional, simulated sites only: a stand-in car (sim_ev)
      soc_pm: 800               # SoC when plugged in, permille (0 .. 1000)
      soc_min_pm: 200           # no export at or below (0 .. 1000)
      soc_max_pm: 1000          # no import at or above (0 .. 1000)
      capacity_wh: 60000        # (1 .. 1e7)
      max_charge_w: 11000       # (0 .. 1e6)
      max_discharge_w: 11000    # (0 .. 1e6)

``load(path)`` -> ``Config`` or ``ConfigError`` naming the file, the key (dotted path), the
bad value and what is allowed. The daemon refuses to start on an error; on SIGHUP it keeps
the last good config when the new file is bad.

Context: host (daemon).
"""

import ipaddress
from dataclasses import dataclass, field

from v2g.common.errors import UsageError
from v2g.gateway.sim_ev import RANGES as SIM_EV_RANGES


class ConfigError(UsageError):
    """A config file that does not validate (the CLI exits 2)."""


@dataclass
class Writes:
    enabled: bool = False
    allow: tuple = ()  # ipaddress networks
    unlock_token: str = ""
    unlock_s: float = 300.0

    def allows(self, host):
        """True when the client address ``host`` (a string) is in the allow-list."""
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.allow)


@dataclass
class Config:
    path: str = ""
    link_device: str = ""
    link_baudrate: int = 115200
    link_hb_timeout_s: float = 1.0
    link_service_socket: str = None  # the service relay's Unix socket (service_relay.py)
    modbus_host: str = "127.0.0.1"
    modbus_port: int = 1502
    modbus_unit_id: int = 1
    modbus_stale_s: float = 1.0
    writes: Writes = field(default_factory=Writes)
    device_serial: str = "V2G-0001"
    log_level: str = "info"
    station: dict = None  # {"iface", "config" (parsed JSON), "config_path", "status_path"}
    billing: object = None  # billing_config.BillingConfig when billing:/mqtt: are given
    sems: dict = None  # {"policy": sems_hold.HoldPolicy, "topic": heartbeat topic}
    sim_ev: dict = None  # sim_ev.SimEv's spec (simulated sites only)


_SCHEMA = {
    "link": {"device": str, "baudrate": int, "hb_timeout_s": float, "service_socket": str},
    "modbus": {"host": str, "port": int, "unit_id": int, "stale_s": float,
               "writes": {"enabled": bool, "allow": list, "unlock_token": str,
                          "unlock_s": float}},
    "device": {"serial": str},
    "log": {"level": str},
    "station": {"iface": str, "config": str, "status_path": str},
    "sems": {"hold_s": float, "fallback_lead_s": float, "safe_export_w": float,
             "safe_import_w": float, "site": str},
    "sim_ev": {k: float for k in SIM_EV_RANGES},
}
_RANGES = {
    "link.baudrate": (1200, 4000000),
    "link.hb_timeout_s": (0.2, 60.0),
    "modbus.port": (1, 65535),
    "modbus.unit_id": (0, 247),
    "modbus.stale_s": (0.1, 60.0),
    "modbus.writes.unlock_s": (1.0, 86400.0),
    "sems.hold_s": (0.5, 3600.0),
    "sems.fallback_lead_s": (0.0, 3600.0),
    "sems.safe_export_w": (0.0, 1e6),
    "sems.safe_import_w": (0.0, 1e6),
}
_RANGES.update(("sim_ev." + k, lo_hi) for k, lo_hi in SIM_EV_RANGES.items())
_LEVELS = ("debug", "info", "warning", "error")


def _check_types(where, node, schema, errors, out):
    if not isinstance(node, dict):
        errors.append("key '%s': value %r is not a mapping" % (where or "(top)", node))
        return
    for key, value in node.items():
        path = "%s.%s" % (where, key) if where else str(key)
        if key not in schema:
            errors.append("unknown key '%s' (known here: %s)"
                          % (path, ", ".join(sorted(schema))))
            continue
        want = schema[key]
        if isinstance(want, dict):
            _check_types(path, value, want, errors, out)
            continue
        if want is list and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            errors.append("key '%s': value %r is not %s" % (path, value, {
                str: "a string", int: "an integer", float: "a number", bool: "true or false",
                list: "a list"}[want]))
            continue
        lo_hi = _RANGES.get(path)
        if lo_hi and not lo_hi[0] <= value <= lo_hi[1]:
            errors.append("key '%s': value %r outside %s..%s" % (path, value, *lo_hi))
            continue
        out[path] = value


def parse(data, path="config"):
    """Validate a parsed YAML document -> ``Config``; ``ConfigError`` lists every problem."""
    errors, flat = [], {}
    if data is None:
        data = {}
    billing = None
    has_billing = isinstance(data, dict) and ("billing" in data or "mqtt" in data)
    if has_billing:
        # the billing leg's sections: validated by billing_config (unknown keys refused,
        # key files checked), errors name the dotted key and the value
        from v2g.gateway import billing_config

        try:
            billing = billing_config.parse(data, str(path))
        except billing_config.ConfigError as e:
            errors.append(str(e))
        data = {k: v for k, v in data.items() if k not in ("billing", "mqtt")}
    _check_types("", data, _SCHEMA, errors, flat)
    if "link.device" not in flat and not any("'link.device'" in e for e in errors):
        errors.append("key 'link.device' is missing (the UART to the controller, "
                      "e.g. /dev/ttyS1 or the simulated board's link: /dev/pts/M)")
    allow = []
    for i, item in enumerate(flat.get("modbus.writes.allow", ())):
        try:
            allow.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            errors.append("key 'modbus.writes.allow[%d]': value %r is not an address or "
                          "network (e.g. 127.0.0.1, 192.168.10.0/24, ::1)" % (i, item))
    token = flat.get("modbus.writes.unlock_token", "")
    if "modbus.writes.unlock_token" in flat and len(token) < 8:
        errors.append("key 'modbus.writes.unlock_token': value of %d characters is too "
                      "short (at least 8)" % len(token))
    elif len(token) > 32:
        errors.append("key 'modbus.writes.unlock_token': value of %d characters is too "
                      "long (at most 32: the unlock register holds 16 registers)" % len(token))
    if flat.get("modbus.writes.enabled") and not token:
        errors.append("key 'modbus.writes.unlock_token' is missing: writes.enabled is true "
                      "and writes need an unlock token (at least 8 characters)")
    level = flat.get("log.level", "info")
    if level not in _LEVELS:
        errors.append("key 'log.level': value %r is not one of %s" % (level, ", ".join(_LEVELS)))
    serial = flat.get("device.serial", "V2G-0001")
    if len(serial.encode()) > 32:
        errors.append("key 'device.serial': value %r longer than 32 bytes" % serial)
    station = _station(flat, errors)
    sems = _sems(data, flat, has_billing, errors)
    sim_ev = _sim_ev(data, flat, station, errors)
    if errors:
        raise ConfigError("%s: %s" % (path, "; ".join(errors)))
    return Config(
        station=station,
        path=str(path),
        link_device=flat["link.device"],
        link_baudrate=flat.get("link.baudrate", 115200),
        link_hb_timeout_s=flat.get("link.hb_timeout_s", 1.0),
        link_service_socket=flat.get("link.service_socket"),
        modbus_host=flat.get("modbus.host", "127.0.0.1"),
        modbus_port=flat.get("modbus.port", 1502),
        modbus_unit_id=flat.get("modbus.unit_id", 1),
        modbus_stale_s=flat.get("modbus.stale_s", 1.0),
        writes=Writes(enabled=flat.get("modbus.writes.enabled", False), allow=tuple(allow),
                      unlock_token=token, unlock_s=flat.get("modbus.writes.unlock_s", 300.0)),
        device_serial=serial,
        log_level=level,
        billing=billing,
        sems=sems,
        sim_ev=sim_ev,
    )


def _sim_ev(data, flat, station, errors):
    """The ``sim_ev`` section (a stand-in car): its spec, or None."""
    if not isinstance(data, dict) or "sim_ev" not in data:
        return None
    if station is not None:
        errors.append("key 'sim_ev': not with a 'station' section (the car's state comes "
                      "from its ISO 15118 session there)")
        return None
    spec = {k[len("sim_ev."):]: v for k, v in flat.items() if k.startswith("sim_ev.")}
    lo = spec.get("soc_min_pm", 200.0)
    hi = spec.get("soc_max_pm", 1000.0)
    if lo > hi:
        errors.append("key 'sim_ev.soc_min_pm': value %r is above sim_ev.soc_max_pm %r"
                      % (lo, hi))
    return spec


def _sems(data, flat, has_billing, errors):
    """The ``sems`` section: the hold policy and the heartbeat topic (the heartbeat comes
    over the billing leg's MQTT connection, so ``billing``/``mqtt`` are required)."""
    if not isinstance(data, dict) or "sems" not in data:
        return None
    if not isinstance(data["sems"], dict) or any("'sems" in e for e in errors):
        return None  # already reported
    if not has_billing:
        errors.append("key 'sems': needs the billing and mqtt sections (the SEMS heartbeat "
                      "and setpoints arrive over that MQTT connection)")
        return None
    from v2g.gateway.sems_hold import HoldPolicy

    hold = flat.get("sems.hold_s", 5.0)
    lead = flat.get("sems.fallback_lead_s", 0.0)
    if lead >= hold:
        errors.append("key 'sems.fallback_lead_s': value %r is not below sems.hold_s %r"
                      % (lead, hold))
        return None
    site = flat.get("sems.site", "+")
    if site != "+" and (not site or any(c in site for c in "/+#")):
        errors.append("key 'sems.site': value %r is not a site id (no / + #)" % site)
        return None
    policy = HoldPolicy(hold_s=hold, lead_s=lead,
                        safe_export_w=flat.get("sems.safe_export_w", 0.0),
                        safe_import_w=flat.get("sems.safe_import_w", 0.0))
    return {"policy": policy, "topic": "v2g/_sems/%s/heartbeat" % site}


def _station(flat, errors):
    """The ``station`` section: its JSON config read and checked now (unknown keys,
    the SECC's and the OCPP client's keys), so a bad one stops the daemon at start."""
    if not any(k.startswith("station.") for k in flat):
        return None
    if "station.iface" not in flat:
        errors.append("key 'station.iface' is missing (the interface the car is on)")
        return None
    out = {"iface": flat["station.iface"], "config": {}, "config_path": None,
           "status_path": flat.get("station.status_path")}
    cpath = flat.get("station.config")
    if cpath:
        from v2g.gateway.station import check_config, load_config

        try:
            out["config"] = load_config(cpath)
            check_config(out["config"])
        except OSError as e:
            errors.append("key 'station.config': cannot read %s: %s" % (cpath, e.strerror or e))
        except ValueError as e:
            errors.append("key 'station.config': %s" % e)
        out["config_path"] = cpath
    return out


def load(path):
    """Read and validate the YAML file ``path`` -> ``Config`` (``ConfigError`` otherwise)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError("%s: not valid YAML: %s" % (path, str(e).replace("\n", " "))) from None
    return parse(data, path)
