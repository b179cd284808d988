"""``v2g check-tls --config FILE``: the TLS handshake the daemon would make, and its verdict.

Loads the ``billing:``/``mqtt:`` sections of the daemon config, connects to the broker with
TLS 1.3 and the client certificate, sends an MQTT CONNECT and prints ``OK: ...`` (exit 0) or
``REJECTED: ...`` (exit 1; ``REJECTED: Certificate Expired: ...`` with subject and expiry
date when a certificate is past its date). A bad config exits 2 naming the key. The
daemon's ``v2g daemon check-tls`` calls ``v2g.gateway.tls.check_tls`` the same way.

Context: host (communication controller).
"""

from v2g.gateway import billing_config, tls


def add_arguments(p):
    p.add_argument("--config", default="/etc/v2g/config.yaml",
                   help="daemon config with billing: and mqtt: sections "
                        "(default /etc/v2g/config.yaml)")


def run(args):
    return tls.check_tls(billing_config.load(args.config))
