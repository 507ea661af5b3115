from __future__ import annotations

import base64
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from lakehouse import catalog_tokens
from lakehouse.errors import ConfigError


@pytest.fixture(scope="module")
def signing_key() -> str:
    return catalog_tokens.generate_signing_key()


def decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verifier(signing_key: str) -> rsa.RSAPublicKey:
    der = base64.b64decode(catalog_tokens.public_key(signing_key))
    key = serialization.load_der_public_key(der)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def test_a_token_names_its_principal_and_lasts_a_year(signing_key):
    token = catalog_tokens.mint(signing_key, "ingest", now=1_800_000_000)
    header, claims, _ = token.split(".")
    assert json.loads(decode(header)) == {"alg": "RS256", "typ": "JWT"}
    assert json.loads(decode(claims)) == {
        "iss": "lakehouse", "sub": "ingest", "upn": "ingest",
        "iat": 1_800_000_000, "exp": 1_800_000_000 + 365 * 24 * 3600,
    }  # fmt: skip


def test_the_public_key_verifies_the_signature_and_refuses_a_changed_claim(signing_key):
    header, claims, signature = catalog_tokens.mint(signing_key, "trino").split(".")
    key = verifier(signing_key)
    key.verify(
        decode(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    forged = catalog_tokens._json_segment({"iss": "lakehouse", "sub": "lakehouse"})
    with pytest.raises(InvalidSignature):
        key.verify(
            decode(signature), f"{header}.{forged}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )


def test_another_key_does_not_verify(signing_key):
    header, claims, signature = catalog_tokens.mint(signing_key, "trino").split(".")
    other = verifier(catalog_tokens.generate_signing_key())
    with pytest.raises(InvalidSignature):
        other.verify(
            decode(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )


def test_a_damaged_signing_key_is_a_clear_error():
    with pytest.raises(ConfigError) as error:
        catalog_tokens.mint(
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----", "x"
        )
    assert "not a PEM private key" in error.value.message
