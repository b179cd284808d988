"""Certificates for the ISO 15118 tests and demo, and the daemon's expiry check.

``make_cert`` writes a self-signed ECDSA P-256 (secp256r1, as ISO 15118 uses) certificate
and key with a chosen validity window (short-lived ones for the expiry case);
``check_cert`` tells whether a certificate is valid now. An expired SECC or contract
certificate is logged as the field manual's text ``REJECTED: Certificate Expired``.
``make_iso15118_pki`` writes the two chains a TLS 1.3 session with mutual authentication
needs (ISO 15118-20: the car proves its OEM provisioning certificate, the charger its
SECC certificate) in the directory layout of the ``iso15118`` package (``PKI_PATH``).
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


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "V2G test PKI")])


def _issue(cn, issuer, path_len, valid_s, not_before=None):
    """(certificate, key): ``issuer`` None makes a self-signed root; ``path_len`` None
    makes a leaf (end entity), else a CA allowing that many CAs below it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    nb = not_before or now - datetime.timedelta(seconds=60)
    key = ec.generate_private_key(ec.SECP256R1())
    parent_cert, parent_key = issuer if issuer else (None, key)
    ca = path_len is not None
    b = (x509.CertificateBuilder().subject_name(_name(cn))
         .issuer_name(parent_cert.subject if parent_cert else _name(cn))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(nb).not_valid_after(nb + datetime.timedelta(seconds=valid_s))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len if ca else None),
                        critical=True)
         .add_extension(x509.KeyUsage(
             digital_signature=not ca, content_commitment=False, key_encipherment=False,
             data_encipherment=False, key_agreement=not ca, key_cert_sign=ca, crl_sign=ca,
             encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False))
    if parent_cert is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            parent_key.public_key()), critical=False)
    return b.sign(parent_key, hashes.SHA256()), key


def make_iso15118_pki(root, password="v2g-test", secc_valid_s=86400, secc_not_before=None):
    """Test PKI for ISO 15118 TLS in ``root`` (the ``iso15118`` package's ``PKI_PATH``
    layout, ``iso15118_2/certs`` and ``iso15118_2/private_keys``): V2G root -> CPO sub-CA 1
    -> CPO sub-CA 2 -> SECC leaf (``cpoCertChain.pem``, ``seccLeaf.key``) and OEM root ->
    OEM sub-CA 1 -> sub-CA 2 -> OEM provisioning leaf (``oemCertChain.pem``,
    ``oemLeaf.key``); ECDSA P-256, SHA-256; leaf keys encrypted with ``password`` (its
    ``*Password.txt`` files beside them). ``secc_valid_s`` / ``secc_not_before``: a
    short-lived or expired SECC certificate. Returns the SECC leaf's path."""
    import os

    certs = os.path.join(root, "iso15118_2", "certs")
    keys = os.path.join(root, "iso15118_2", "private_keys")
    os.makedirs(certs, exist_ok=True)
    os.makedirs(keys, mode=0o700, exist_ok=True)
    year = 365 * 86400

    def pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    def write(path, data, mode=0o644):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    for side, root_name, leaf, leaf_valid_s, nb in (
            ("cpo", "v2gRootCA", "secc", secc_valid_s, secc_not_before),
            ("oem", "oemRootCA", "oem", 4 * year, None)):
        r = _issue("%s root" % side.upper(), None, 2, 10 * year)
        s1 = _issue("%s sub-CA 1" % side.upper(), r, 1, 4 * year)
        s2 = _issue("%s sub-CA 2" % side.upper(), s1, 0, year)
        lf = _issue("%s leaf" % leaf.upper(), s2, None, leaf_valid_s, nb)
        write(os.path.join(certs, "%sCert.pem" % root_name), pem(r[0]))
        write(os.path.join(certs, "%sCert.der" % root_name),
              r[0].public_bytes(serialization.Encoding.DER))
        write(os.path.join(certs, "%sLeafCert.pem" % leaf), pem(lf[0]))
        write(os.path.join(certs, "%sCertChain.pem" % side),
              pem(lf[0]) + pem(s2[0]) + pem(s1[0]))
        write(os.path.join(keys, "%sLeaf.key" % leaf), lf[1].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password.encode())), 0o600)
        write(os.path.join(keys, "%sLeafPassword.txt" % leaf), password.encode() + b"\n",
              0o600)
    return os.path.join(certs, "seccLeafCert.pem")


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
