from __future__ import annotations

import socket

import pytest

from lakehouse.config import (
    MinioSettings,
    NessieSettings,
    PostgresSettings,
    Settings,
    TrinoSettings,
)
from lakehouse.transform import servers
from lakehouse.transform.runner import _outage_message


@pytest.fixture
def ports():
    """Two ports that accept connections, then two that do not (bound, never listening)."""
    sockets = [socket.socket() for _ in range(4)]
    try:
        for n, sock in enumerate(sockets):
            sock.bind(("127.0.0.1", 0))
            if n < 2:
                sock.listen()
        yield [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_only_the_servers_that_refuse_connections_are_away(tmp_path, ports):
    nessie, postgres, trino, minio = ports
    settings = Settings(
        home=tmp_path,
        nessie=NessieSettings(port=nessie),
        trino=TrinoSettings(port=trino),
        postgres=PostgresSettings(port=postgres),
        minio=MinioSettings(port=minio),
    )
    assert servers.away(settings) == ["trino", "object store"]


def test_an_external_store_is_reached_where_its_endpoint_says(tmp_path):
    settings = Settings(home=tmp_path, minio=MinioSettings(endpoint="https://s3.example.org"))
    assert servers.addresses(settings)["object store"] == ("s3.example.org", 443)


@pytest.mark.parametrize(
    ("message", "outage"),
    [
        ("TrinoConnectionError: failed to execute: HTTPSConnectionPool(host='127.0.0.1', "
         "port=8080): Max retries exceeded with url: /v1/statement", True),
        ("Connection refused", True),
        ("TrinoQueryError(type=INTERNAL_ERROR, name=NO_NODES_AVAILABLE)", True),
        ("Server refused connection: http://127.0.0.1:19120/iceberg/v1/config", True),
        ("Got 3 results, configured to fail if != 0", False),
        ("Division by zero", False),
        ("", False),
    ],
)  # fmt: skip
def test_a_lost_server_is_told_from_a_failure_of_the_data(message, outage):
    assert _outage_message(message) is outage
