"""A throw-away PKI for the billing test bed: CA, broker, ledger and station certificates.

EC P-256 keys (fast to make), X.509 v3 via ``cryptography``. The broker certificate names
``localhost`` and ``127.0.0.1``; a client certificate's common name is its MQTT identity
(mosquitto ``use_identity_as_username``): the station id, or ``ledger``. Private keys are
written mode 0600. Short-lived and already-expired certificates are made by passing
``not_before`` / ``not_after``. For tests and the demo only: a real deployment's CA is
elsewhere (docs/billing.md).

Context: host (tests, ``make billing-demo``).
"""

import datetime as dt
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from v2g.gateway.signing import write_new_key


def _now():
    return dt.datetime.now(dt.timezone.utc)


def _write_key(path, key):
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)


class CA:
    """A CA whose files live in ``directory`` (``<name>.pem``, ``<name>.key``)."""

    def __init__(self, directory, name="ca", cn="v2g test CA"):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = _now()
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.cert_path = os.path.join(self.dir, name + ".pem")
        with open(self.cert_path, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))
        _write_key(os.path.join(self.dir, name + ".key"), self.key)

    def issue(self, name, cn, server=False, not_before=None, not_after=None, days=365):
        """Issue ``<dir>/<name>.pem`` + ``<name>.key`` for ``cn``; returns (cert, key) paths.

        ``server``: a TLS server certificate for localhost / 127.0.0.1; else a client one.
        ``not_after`` in the past makes an already-expired certificate.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        nb = not_before or (now - dt.timedelta(hours=1))
        na = not_after or (now + dt.timedelta(days=days))
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(self.cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(nb)
             .not_valid_after(na)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(
                 [ExtendedKeyUsageOID.SERVER_AUTH if server else
                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        cert_path = os.path.join(self.dir, name + ".pem")
        key_path = os.path.join(self.dir, name + ".key")
        tmp = cert_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path + ".tmp", key)
        # renewal: replace both files atomically (a reader sees old or new, never half)
        os.replace(key_path + ".tmp", key_path)
        os.replace(tmp, cert_path)
        return cert_path, key_path


def expired_window(hours_ago=2):
    """(not_before, not_after) of a certificate that expired ``hours_ago`` hours ago."""
    now = _now()
    return now - dt.timedelta(days=30), now - dt.timedelta(hours=hours_ago)


def station_signing_key(key_dir, pub_dir, station):
    """Make ``key_dir/<station>.ed25519`` (0600) and ``pub_dir/<station>.pub``; returns the
    private key path."""
    os.makedirs(key_dir, exist_ok=True)
    os.makedirs(pub_dir, exist_ok=True)
    path = os.path.join(key_dir, station + ".ed25519")
    pub = write_new_key(path)
    with open(os.path.join(pub_dir, station + ".pub"), "wb") as f:
        f.write(pub)
    return path
