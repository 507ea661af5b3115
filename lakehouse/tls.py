"""A private certificate authority, generated at first start, and the certificates it signs.

Every client of ours verifies servers against `tls/ca.pem`; users' tools are pointed at
the same file (`trino --truststore-path`, `verify=` in Python). Keys are 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lakehouse.private_files import write_private

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
    key_encipherment=False, data_encipherment=False, key_agreement=False,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def verification(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What an HTTPS client verifies a server against: `ca_file` (a deployment's private
    CA), else the system's CAs (`True`, for httpx's `verify=`)."""
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(ca_file))


def tls_dir(home: Path) -> Path:
    return home / "tls"


def ca_path(home: Path) -> Path:
    """The CA certificate clients trust."""
    return tls_dir(home) / "ca.pem"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_ca(home: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The stack's CA, created on first use."""
    cert_file, key_file = ca_path(home), tls_dir(home) / "ca.key"
    if cert_file.exists() and key_file.exists():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lakehouse private CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private(key_file, _key_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cert_file.chmod(0o644)
    return cert, key


def server_certificate(home: Path, path: Path, name: str, hosts: list[str]) -> Path:
    """`path`: a PEM file with the key and certificate chain of server `name` for `hosts`.

    Signed by the stack's CA in `home`; reissued when the hosts change or it nears
    expiry; the file is 0600.
    """
    wanted = sorted(set(hosts))
    if path.exists():
        current = x509.load_pem_x509_certificates(path.read_bytes())[0]
        names = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = sorted(
            [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
            + names.get_values_for_type(x509.DNSName)
        )
        fresh = current.not_valid_after_utc - dt.datetime.now(dt.UTC) > RENEW_BEFORE
        if have == wanted and fresh:
            return path
    ca_cert, ca_key = ensure_ca(home)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"lakehouse {name}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in wanted]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    encoding = serialization.Encoding.PEM
    write_private(
        path, _key_pem(key) + cert.public_bytes(encoding) + ca_cert.public_bytes(encoding)
    )
    return path


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
