from __future__ import annotations

import pytest

from lakehouse.config import NessieSettings, Settings, is_loopback
from lakehouse.errors import StackError
from lakehouse.stack.nessie import check_exposure


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("192.168.1.20", False), ("::", False), ("lakehouse.lan", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_nessie_stays_on_loopback(tmp_path):
    check_exposure(Settings(home=tmp_path))


def test_nessie_refuses_a_network_address_and_says_what_to_do(tmp_path):
    with pytest.raises(StackError) as refused:
        check_exposure(Settings(home=tmp_path, host="0.0.0.0"))
    assert "without authentication" in refused.value.message
    assert refused.value.fix is not None and "LAKEHOUSE_GATEWAY_HOST" in refused.value.fix


def test_the_risk_can_be_accepted_explicitly(tmp_path):
    nessie = NessieSettings(allow_unauthenticated_remote=True)
    check_exposure(Settings(home=tmp_path, host="0.0.0.0", nessie=nessie))
