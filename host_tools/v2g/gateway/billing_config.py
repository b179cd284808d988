"""The billing part of the daemon's config: the ``billing:`` and ``mqtt:`` sections.

Read from the daemon's YAML file (other top-level sections are left to the daemon's own
loader)::

    billing:
      station: ST-0001                  # station id: MQTT topic level and certificate CN
      outbox: /var/lib/v2g/outbox.sqlite
      signing_key: /etc/v2g/keys/ST-0001.ed25519   # mode 0600/0400, Ed25519 PEM
      telemetry_s: 5.0                  # telemetry period, s (0.5 .. 3600)
      max_export_w: 11000               # limits for setpoints and demand offers, W
      max_import_w: 11000
      max_q_var: 11000
    mqtt:
      host: 127.0.0.1                   # the back-end broker
      port: 8883
      ca: /etc/v2g/tls/ca.pem           # CA bundle the broker's certificate chains to
      cert: /etc/v2g/tls/ST-0001.pem    # client certificate (CN = station id)
      key: /etc/v2g/tls/ST-0001.key     # its private key (mode 0600/0400)
      keepalive_s: 30                   # MQTT keepalive, s (5 .. 600)
      backoff_min_s: 0.5                # reconnect backoff, doubling, s
      backoff_max_s: 30.0
      ack_timeout_s: 30.0               # no energy/ack progress this long: resend
      connect_timeout_s: 5.0            # TLS + CONNECT must finish within this, s

``load(path)`` / ``parse(data, path)`` -> ``BillingConfig`` or ``ConfigError`` (a
``UsageError``: exit 2) naming the file, the dotted key, the bad value and what is allowed.
Files are checked at load: the signing key and the TLS key must exist and be private, the
CA and certificate must exist and be readable.

Context: host (daemon).
"""

import os
from dataclasses import dataclass

import yaml

from v2g.common.energy_record import RecordError, check_station
from v2g.common.errors import UsageError
from v2g.gateway.signing import KeyFileError, check_private_file
from v2g.gateway.tls import TlsFiles, load_cert


class ConfigError(UsageError):
    """A billing config that does not validate (the CLI exits 2)."""


@dataclass
class BillingConfig:
    path: str
    station: str
    outbox: str
    signing_key: str
    host: str
    port: int
    tls: TlsFiles
    telemetry_s: float = 5.0
    max_export_w: int = 11000
    max_import_w: int = 11000
    max_q_var: int = 11000
    keepalive_s: int = 30
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    ack_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0


# key -> (type, required, (lo, hi) or None)
_BILLING = {
    "station": (str, True, None), "outbox": (str, True, None),
    "signing_key": (str, True, None), "telemetry_s": (float, False, (0.5, 3600)),
    "max_export_w": (int, False, (0, 1_000_000)), "max_import_w": (int, False, (0, 1_000_000)),
    "max_q_var": (int, False, (0, 1_000_000)),
}
_MQTT = {
    "host": (str, True, None), "port": (int, False, (1, 65535)), "ca": (str, True, None),
    "cert": (str, True, None), "key": (str, True, None), "keepalive_s": (int, False, (5, 600)),
    "backoff_min_s": (float, False, (0.05, 60)), "backoff_max_s": (float, False, (0.1, 3600)),
    "ack_timeout_s": (float, False, (0.5, 3600)),
    "connect_timeout_s": (float, False, (0.5, 120)),
}


def _section(data, name, schema, where):
    sec = data.get(name)
    if not isinstance(sec, dict):
        raise ConfigError("%s: key %r: a mapping is required (got %r)" % (where, name, sec))
    out = {}
    for key in sec:
        if key not in schema:
            raise ConfigError("%s: key %s.%s: unknown; allowed: %s"
                              % (where, name, key, ", ".join(schema)))
    for key, (typ, required, rng) in schema.items():
        if key not in sec:
            if required:
                raise ConfigError("%s: key %s.%s: required" % (where, name, key))
            continue
        v = sec[key]
        ok = isinstance(v, typ) and not isinstance(v, bool)
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok or (typ is str and not v):
            raise ConfigError("%s: key %s.%s: %r is not a%s %s" % (
                where, name, key, v, "n" if typ is int else "", typ.__name__))
        if rng and not rng[0] <= v <= rng[1]:
            raise ConfigError("%s: key %s.%s: %r outside %s..%s"
                              % (where, name, key, v, rng[0], rng[1]))
        out[key] = v
    return out


def parse(data, path="<config>"):
    """Validate the ``billing`` and ``mqtt`` sections of a parsed YAML mapping."""
    if not isinstance(data, dict):
        raise ConfigError("%s: a YAML mapping is required" % path)
    b = _section(data, "billing", _BILLING, path)
    m = _section(data, "mqtt", _MQTT, path)
    try:
        check_station(b["station"], "key billing.station")
    except RecordError as e:
        raise ConfigError("%s: %s" % (path, e)) from None
    base = os.path.dirname(os.path.abspath(path)) if path != "<config>" else os.getcwd()

    def rel(p):
        return p if os.path.isabs(p) else os.path.join(base, p)

    tls = TlsFiles(ca=rel(m.pop("ca")), cert=rel(m.pop("cert")), key=rel(m.pop("key")))
    cfg = BillingConfig(path=path, station=b.pop("station"), outbox=rel(b.pop("outbox")),
                        signing_key=rel(b.pop("signing_key")), host=m.pop("host"),
                        port=m.pop("port", 8883), tls=tls, **b, **m)
    if cfg.backoff_max_s < cfg.backoff_min_s:
        raise ConfigError("%s: key mqtt.backoff_max_s: %r below mqtt.backoff_min_s %r"
                          % (path, cfg.backoff_max_s, cfg.backoff_min_s))
    try:
        check_private_file(cfg.signing_key, "key billing.signing_key")
        check_private_file(tls.key, "key mqtt.key")
        load_cert(tls.cert, "key mqtt.cert")
        load_cert(tls.ca, "key mqtt.ca")
    except KeyFileError as e:
        raise ConfigError("%s: %s" % (path, e)) from None
    return cfg


def load(path):
    """Read and validate the billing sections of the YAML file at ``path``."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("config %s: no such file" % path) from None
    except OSError as e:
        raise ConfigError("config %s: %s" % (path, e.strerror)) from None
    except yaml.YAMLError as e:
        raise ConfigError("config %s: not YAML (%s)" % (path, e)) from None
    return parse(data, path)
