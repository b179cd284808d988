"""Certificates for the ISO 15118 tests and demo, and the daemon's expiry check.

``make_cert`` writes a self-signed ECDSA P-256 (secp256r1, as ISO 15118 uses) certificate
and key with a chosen validity window (short-lived ones for the expiry case);
``check_cert`` tells whether a certificate is valid now. An expired SECC or contract
certificate is logged as the field manual's text ``REJECTED: Certificate Expired``.
Context: host (the daemon, tests).
"""

import datetime
import logging

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("v2g.gateway.pki")

EXPIRED = "REJECTED: Certificate Expired"
NOT_YET_VALID = "REJECTED: Certificate Not Yet Valid"


def make_cert(cert_path, key_path, cn="SECC", not_before=None, valid_s=86400):
    now = datetime.datetime.now(datetime.timezone.utc)
    nb = not_before or now - datetime.timedelta(seconds=60)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(nb + datetime.timedelta(seconds=valid_s))
            .sign(key, hashes.SHA256()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert


def check_cert(path, what="SECC", now=None):
    """None when ``path`` is valid now, else the rejection text (also logged)."""
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if now > cert.not_valid_after_utc:
        text = "%s (%s certificate %s, not after %s)" % (
            EXPIRED, what, cert.subject.rfc4514_string(), cert.not_valid_after_utc.isoformat())
    elif now < cert.not_valid_before_utc:
        text = "%s (%s certificate %s, not before %s)" % (
            NOT_YET_VALID, what, cert.subject.rfc4514_string(),
            cert.not_valid_before_utc.isoformat())
    else:
        return None
    log.error(text)
    return text
