from __future__ import annotations

import socket

import pytest

from lakehouse import servers
from lakehouse.config import (
    MinioSettings,
    NessieSettings,
    PostgresSettings,
    Settings,
    TrinoSettings,
)
from lakehouse.errors import ServersAwayError


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
        ("HttpError: error 500: b'java.lang.IllegalStateException: authenticators were not "
         "loaded", True),
        ("Got 3 results, configured to fail if != 0", False),
        ("Division by zero", False),
        ("", False),
    ],
)  # fmt: skip
def test_a_lost_server_is_told_from_a_failure_of_the_data(message, outage):
    assert servers.is_outage_message(message) is outage


def test_an_error_raised_from_a_lost_connection_is_an_outage():
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except OSError as exc:
            raise RuntimeError("query failed") from exc
    except RuntimeError as wrapped:
        assert servers.is_outage(wrapped)
    assert not servers.is_outage(ValueError("Division by zero"))
    assert servers.is_outage(RuntimeError("TrinoQueryError(name=SERVER_STARTING_UP)"))


def test_waiting_returns_at_once_when_all_answer_and_gives_up_on_time(tmp_path, ports):
    up_1, up_2, down_1, _ = ports
    with socket.socket() as up_3, socket.socket() as up_4:
        for extra in (up_3, up_4):
            extra.bind(("127.0.0.1", 0))
            extra.listen()
        answering = Settings(
            home=tmp_path,
            nessie=NessieSettings(port=up_1), trino=TrinoSettings(port=up_2),
            postgres=PostgresSettings(port=up_3.getsockname()[1]),
            minio=MinioSettings(port=up_4.getsockname()[1]),
        )  # fmt: skip
        _wait_as(answering, down_1)


def _wait_as(answering: Settings, closed_port: int) -> None:
    said: list[str] = []
    servers.wait_until_answering(answering, timeout=0, report=said.append)
    assert said == []
    trino_away = answering.model_copy(update={"trino": TrinoSettings(port=closed_port)})
    with pytest.raises(ServersAwayError, match=r"^trino still not answering after 1 s$"):
        servers.wait_until_answering(trino_away, timeout=1, report=said.append)
    assert said == ["waiting for trino (not answering)"]
