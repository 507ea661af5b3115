"""Bearer tokens for Nessie, minted by the platform itself.

Nessie authenticates every request with a JSON Web Token. The platform holds an RSA
signing key (in its credentials, 0600) and signs a token per principal (`trino`,
`ingest`, `transform`, …); Nessie holds only the public half and checks signature,
issuer and expiry locally (Quarkus OIDC's `public-key` mode), so no identity provider
runs. A token lives a year; a new signing key (and a restart) invalidates every one.
"""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from lakehouse.errors import ConfigError

ISSUER = "lakehouse"
LIFETIME_SECONDS = 365 * 24 * 3600
_KEY_BITS = 2048


def generate_signing_key() -> str:
    """A new RSA private key, PEM (PKCS#8), without the final newline (a Secret's file
    reads back stripped)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
        .strip()
    )


def _private_key(signing_key: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(signing_key.encode(), password=None)
    except ValueError as exc:
        raise ConfigError(
            f"the Nessie signing key is not a PEM private key: {exc}",
            fix="restore `nessie_signing_key` in the credentials, or remove it to make a new one",
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            "the Nessie signing key is not an RSA key",
            fix="remove `nessie_signing_key` from the credentials to make a new one",
        )
    return key


def public_key(signing_key: str) -> str:
    """The public half as Quarkus reads `quarkus.oidc.public-key`: base64 DER, one line."""
    der = (
        _private_key(signing_key)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_segment(value: dict[str, object]) -> str:
    return _segment(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def mint(signing_key: str, subject: str, *, now: float | None = None) -> str:
    """A token (RS256) naming `subject`, valid for LIFETIME_SECONDS from `now`."""
    issued = int(time.time() if now is None else now)
    header = _json_segment({"alg": "RS256", "typ": "JWT"})
    claims = _json_segment({
        "iss": ISSUER,
        "sub": subject,
        "upn": subject,
        "iat": issued,
        "exp": issued + LIFETIME_SECONDS,
    })  # fmt: skip
    signed = f"{header}.{claims}".encode()
    signature = _private_key(signing_key).sign(signed, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{_segment(signature)}"
