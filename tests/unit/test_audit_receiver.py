from __future__ import annotations

import json

from lakehouse.audit_receiver import MAX_STATEMENT_CHARS, event_row, redact


def _completed(**overrides) -> dict:
    event = {
        "metadata": {"queryId": "20261202_1", "query": "select 1", "queryState": "FINISHED"},
        "context": {"user": "alice", "principal": "alice", "queryType": "SELECT"},
        "ioMetadata": {
            "inputs": [{"catalogName": "lake", "schema": "gold", "table": "site_daily"}],
            "output": None,
        },
        "createTime": "2026-12-02T10:00:00Z",
        "endTime": "2026-12-02T10:00:01Z",
    }
    event.update(overrides)
    return event


def test_a_finished_query_is_one_ok_row_with_its_principal_and_tables():
    user, action, target, outcome, detail, at = event_row(_completed())
    assert (user, action, target, outcome, at) == (
        "alice", "SELECT", None, "ok", "2026-12-02T10:00:00Z",
    )  # fmt: skip
    assert json.loads(detail)["inputs"] == ["lake.gold.site_daily"]


def test_an_access_denial_is_refused_and_other_errors_failed():
    denied = {"errorCode": {"name": "PERMISSION_DENIED"}, "failureMessage": "Access Denied"}
    assert event_row(_completed(failureInfo=denied))[3] == "refused"
    broken = {"errorCode": {"name": "SYNTAX_ERROR"}}
    assert event_row(_completed(failureInfo=broken))[3] == "failed"


def test_impersonation_is_recorded_under_the_principal_that_logged_in():
    context = {"user": "acme-bi", "principal": "superset", "queryType": "SELECT"}
    row = event_row(_completed(context=context))
    assert row[0] == "superset" and json.loads(row[4])["impersonated"] == "acme-bi"


def test_without_impersonation_there_is_no_impersonated_user():
    row = event_row(_completed())
    assert row[0] == "alice" and "impersonated" not in json.loads(row[4])


def test_without_authentication_the_user_is_the_principal():
    row = event_row(_completed(context={"user": "bob", "queryType": "SELECT"}))
    assert row[0] == "bob" and "impersonated" not in json.loads(row[4])


def test_writes_name_their_target():
    io = {"inputs": [], "output": {"catalogName": "lake", "schema": "silver", "table": "x"}}
    assert event_row(_completed(ioMetadata=io))[2] == "lake.silver.x"


def test_created_events_and_other_payloads_are_ignored():
    created = _completed()
    del created["endTime"]
    assert event_row(created) is None
    assert event_row({"something": "else"}) is None


def test_catalog_definitions_lose_their_literals():
    statement = (
        "CREATE CATALOG c USING iceberg WITH (\"s3.aws-secret-key\" = 'hunter2', "
        "\"iceberg.rest-catalog.uri\" = 'http://x')"
    )
    assert "hunter2" not in redact(statement) and redact(statement).count("'***'") == 2
    assert redact("select 'hunter2'") == "select 'hunter2'"  # data, not a secret
    assert len(redact("x" * (MAX_STATEMENT_CHARS + 5))) == MAX_STATEMENT_CHARS
