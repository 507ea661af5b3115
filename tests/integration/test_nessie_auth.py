"""Nessie answers only requests that carry a token the platform signed: no token, a
token signed with another key, an expired one or any other header is refused, on the
native API and on Iceberg REST alike."""

from __future__ import annotations

import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehouse import catalog_tokens
from lakehouse.clients import nessie_api_url, nessie_token
from lakehouse.nessie import NessieClient

pytestmark = pytest.mark.integration

PRINTABLE = st.characters(min_codepoint=33, max_codepoint=126)


@pytest.fixture(scope="module")
def nessie(stack, stack_settings) -> str:
    return f"http://{stack_settings.host}:{stack_settings.nessie.port}"


def answers(nessie: str, authorization: str | None) -> list[int]:
    """Status of a read, a branch creation and the Iceberg REST config, with that header."""
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=nessie, headers=headers, timeout=10, trust_env=False) as http:
        return [
            http.get("/api/v2/trees").status_code,
            http.post(
                "/api/v2/trees", params={"name": "intruder", "type": "BRANCH"},
                json={"type": "BRANCH", "name": "main"},
            ).status_code,
            http.get("/iceberg/v1/config", params={"warehouse": "warehouse"}).status_code,
        ]  # fmt: skip


def test_a_request_without_a_token_is_refused(nessie):
    assert answers(nessie, None) == [401, 401, 401]


def test_a_token_signed_with_another_key_is_refused(nessie):
    stranger = catalog_tokens.mint(catalog_tokens.generate_signing_key(), "lakehouse")
    assert answers(nessie, f"Bearer {stranger}") == [401, 401, 401]


def test_an_expired_token_is_refused(nessie, credentials):
    long_ago = time.time() - catalog_tokens.LIFETIME_SECONDS - 3600
    expired = catalog_tokens.mint(credentials.nessie_signing_key, "lakehouse", now=long_ago)
    assert answers(nessie, f"Bearer {expired}") == [401, 401, 401]


def test_the_platforms_token_reads_and_no_intruder_branch_was_made(nessie, credentials):
    token = nessie_token(credentials)
    with httpx.Client(base_url=nessie, timeout=10, trust_env=False) as http:
        trees = http.get("/api/v2/trees", headers={"Authorization": f"Bearer {token}"})
    assert trees.status_code == 200
    assert "intruder" not in [ref["name"] for ref in trees.json()["references"]]


def test_the_platforms_client_makes_and_removes_a_branch(stack_settings, credentials, unique):
    with NessieClient(stack_settings, credentials) as client:
        made = client.create_branch(f"auth_{unique}")
        assert client.reference(made.name).hash == made.hash
        client.delete_branch(made.name)
        assert made.name not in [ref.name for ref in client.references()]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.one_of(
        st.text(alphabet=PRINTABLE, min_size=1, max_size=200),
        st.builds(lambda t: f"Bearer {t}", st.text(alphabet=PRINTABLE, min_size=1, max_size=400)),
        st.builds(lambda a, b, c: f"Bearer {a}.{b}.{c}", *[st.text(
            alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            max_size=120,
        )] * 3),
    )
)  # fmt: skip
def test_any_other_authorization_header_is_refused(stack_settings, stack, header):
    """Tried as an attacker would: whatever the header holds, the answer is 401."""
    with httpx.Client(timeout=10, trust_env=False) as http:
        response = http.get(
            f"{nessie_api_url(stack_settings)}/trees", headers={"Authorization": header}
        )
    assert response.status_code == 401
