"""TLS for the MQTT leg: TLS 1.3 only, a client certificate, files re-read on every attempt.

``client_context(tls)`` builds a fresh ``ssl.SSLContext`` from the files each time it is
called (the publisher calls it before every connection attempt), so a renewed certificate
file is used on the next attempt without a restart. Before building it checks the client
certificate's validity dates: an expired one raises ``CertificateExpired`` without touching
the network. A server certificate that fails verification as expired, or a broker that
answers our certificate with the ``certificate_expired`` alert, is turned into the same
error by ``explain``. Its text is the one the field manual shows::

    REJECTED: Certificate Expired: client certificate subject=CN=ST-0001 expired
    2026-01-01T00:00:00Z (file /etc/v2g/tls/station.pem)

``check_tls(config) -> exit code`` performs the handshake (and an MQTT CONNECT, because
TLS 1.3 reports a refused client certificate only after the handshake) and prints the
outcome: 0 accepted, 1 rejected (expired, unknown CA, refused), 2 bad config.

Context: host (daemon, ``v2g check-tls``; the ledger uses ``client_context`` too).
"""

import datetime as dt
import socket
import ssl
import struct
from dataclasses import dataclass

from cryptography import x509

from v2g.gateway.signing import KeyFileError, check_private_file

REJECTED_EXPIRED = "REJECTED: Certificate Expired"


@dataclass
class TlsFiles:
    """The three files of a TLS client: CA bundle, own certificate chain, own key.

    ``what`` prefixes the config keys in errors (``mqtt``: ``mqtt.ca``, ``mqtt.cert``...).
    """

    ca: str
    cert: str
    key: str
    what: str = "mqtt"


class CertificateExpired(Exception):
    """A certificate in the chain (ours or the server's) is outside its validity dates."""

    def __init__(self, role, subject, not_after, source=""):
        self.role, self.subject, self.not_after, self.source = role, subject, not_after, source
        text = "%s: %s certificate subject=%s expired %s" % (
            REJECTED_EXPIRED, role, subject, not_after.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if source:
            text += " (%s)" % source
        super().__init__(text)


class TlsRejected(Exception):
    """The handshake failed for a reason other than expiry (unknown CA, refused cert...)."""


def _key(files, name):
    """The config key (``mqtt.cert``) or option (``--cert``) naming one of the files."""
    return files.what + name if files.what.endswith("-") else files.what + "." + name


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise KeyFileError("%s %s: no such file" % (what, path)) from None
    except OSError as e:
        raise KeyFileError("%s %s: %s" % (what, path, e.strerror)) from None


def load_cert(path, what):
    """The first certificate of a PEM file (errors name the config key and the file)."""
    data = _read(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise KeyFileError("%s %s: not a PEM certificate" % (what, path)) from None


def subject_of(cert):
    return cert.subject.rfc4514_string()


def check_validity(cert, role, source, now=None):
    """Raise ``CertificateExpired`` when ``cert`` is not valid at ``now`` (UTC)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if now > cert.not_valid_after_utc:
        raise CertificateExpired(role, subject_of(cert), cert.not_valid_after_utc, source)
    if now < cert.not_valid_before_utc:
        raise TlsRejected("%s certificate subject=%s not valid before %s (%s)" % (
            role, subject_of(cert), cert.not_valid_before_utc.isoformat(), source))


def client_context(files):
    """A fresh TLS 1.3-only client context from ``files`` (read now, checked now).

    Raises ``KeyFileError`` (missing/unreadable/too open file, naming the key) or
    ``CertificateExpired`` (our certificate is past its date).
    """
    ca_key, cert_key, key_key = (_key(files, "ca"), _key(files, "cert"), _key(files, "key"))
    _read(files.ca, ca_key)
    cert = load_cert(files.cert, cert_key)
    check_private_file(files.key, key_key)
    check_validity(cert, "client", "file %s" % files.cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_verify_locations(cafile=files.ca)
    except ssl.SSLError as e:
        raise KeyFileError("%s %s: not a CA bundle (%s)" % (ca_key, files.ca, e.reason)) from None
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as e:
        raise KeyFileError("%s %s / %s %s: key does not match the certificate or is "
                           "malformed (%s)" % (cert_key, files.cert, key_key, files.key,
                                               e.reason)) from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_cert(host, port, timeout=5.0):
    """The server's leaf certificate, fetched without verification (for diagnostics)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def explain(exc, files, host, port):
    """Turn a connection failure into ``CertificateExpired`` when expiry is the cause.

    ``exc``: the exception from the connection attempt (possibly wrapped, e.g. by aiomqtt).
    Returns the ``CertificateExpired`` to report, or None when expiry is not the cause.
    """
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, CertificateExpired):
            return e
        if isinstance(e, ssl.SSLCertVerificationError) and e.verify_code == 10:
            try:
                cert = server_cert(host, port)
                return CertificateExpired("server", subject_of(cert),
                                          cert.not_valid_after_utc, "%s:%d" % (host, port))
            except (OSError, ValueError):
                return CertificateExpired("server", "(unreadable)",
                                          dt.datetime.now(dt.timezone.utc),
                                          "%s:%d" % (host, port))
        text = str(e).lower()
        if "alert certificate expired" in text or "certificate_expired" in text:
            try:
                cert = load_cert(files.cert, _key(files, "cert"))
                return CertificateExpired("client", subject_of(cert), cert.not_valid_after_utc,
                                          "refused by %s:%d" % (host, port))
            except KeyFileError:
                pass
        e = e.__cause__ or e.__context__
    return None


def _mqtt_connect_packet(client_id):
    """A minimal MQTT 3.1.1 CONNECT (clean session, keepalive 10 s)."""
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x0a"
    body = var + struct.pack("!H", len(cid)) + cid
    return b"\x10" + bytes([len(body)]) + body


def handshake(files, host, port, client_id, timeout=5.0):
    """Connect, complete TLS and an MQTT CONNECT; returns a dict describing the session.

    Raises ``CertificateExpired``, ``TlsRejected`` or ``KeyFileError``.
    """
    ctx = client_context(files)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                peer = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
                info = {"version": s.version(), "cipher": s.cipher()[0],
                        "server_subject": subject_of(peer),
                        "server_not_after": peer.not_valid_after_utc.isoformat()}
                s.sendall(_mqtt_connect_packet(client_id))
                ack = s.recv(4)
    except (ssl.SSLError, OSError) as e:
        exp = explain(e, files, host, port)
        if exp is not None:
            raise exp from None
        raise TlsRejected("%s:%d refused the connection: %s" % (host, port, e)) from None
    if len(ack) < 4 or ack[0] != 0x20:
        raise TlsRejected("%s:%d closed the connection after the handshake (client "
                          "certificate refused?)" % (host, port))
    if ack[3] != 0:
        raise TlsRejected("%s:%d CONNACK return code %d" % (host, port, ack[3]))
    return info


def check_tls(config):
    """``v2g check-tls`` / ``v2g daemon check-tls``: handshake with the configured files.

    ``config``: a ``BillingConfig`` (``v2g.gateway.billing_config``). Prints the outcome;
    returns 0 (accepted), 1 (rejected: the ``REJECTED: ...`` line is printed).
    """
    try:
        cert = load_cert(config.tls.cert, _key(config.tls, "cert"))
        print("client certificate subject=%s valid until %s (%s)" % (
            subject_of(cert), cert.not_valid_after_utc.isoformat(), config.tls.cert))
        info = handshake(config.tls, config.host, config.port, config.station)
    except CertificateExpired as e:
        print(str(e))
        return 1
    except TlsRejected as e:
        print("REJECTED: %s" % e)
        return 1
    except KeyFileError as e:
        print("error: %s" % e)
        return 2
    print("OK: %s %s to %s:%d, server subject=%s valid until %s, CONNACK accepted" % (
        info["version"], info["cipher"], config.host, config.port, info["server_subject"],
        info["server_not_after"]))
    return 0

