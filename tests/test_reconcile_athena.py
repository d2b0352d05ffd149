"""The Athena path: moto's Athena (exact query text and ExecutionParameters sent, injected results
parsed into the report), pagination and bytes scanned at the botocore seam, DDL and Grafana forms."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.stub import Stubber
from moto.moto_api import state_manager
from rich.console import Console

from deploytool.aws.athena import AthenaGateway, parameter_literal
from deploytool.aws.session import AwsSession
from deploytool.errors import AwsError
from deploytool.reconcile import grafana
from deploytool.reconcile.command import athena_setup
from deploytool.reconcile.pipeline import reconcile
from deploytool.reconcile.query import AthenaEngine
from deploytool.reconcile.sql import TABLES, grafana_sql, load_query, load_table
from deploytool.targets import athena_settings, settings_for
from tests.builders import make_fleet
from tests.fakes import FakeClock
from tests.reconcile_support import (
    APP,
    BUCKET,
    PREFIX,
    REGION,
    TARGETS,
    MotoFleet,
    mocked_aws,
    stubbed_session,
)

COLUMNS = [
    "group",
    "release_id",
    "expected_version",
    "expected_outcome",
    "latest_release_id",
    "latest_outcome",
    "snapshot_at",
    "instances",
    "on_expected",
    "drifted",
    "untagged",
    "status",
    "instance_id",
    "version",
    "release",
    "lifecycle_state",
    "health",
    "az",
    "market",
    "launch_time",
]
TYPES = {"instances": "bigint", "on_expected": "bigint", "drifted": "bigint", "untagged": "bigint"}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsSession]:
    with mocked_aws(monkeypatch) as session:
        yield session


def _row(values: list[Any]) -> dict[str, Any]:
    return {"Data": [{} if v is None else {"VarCharValue": str(v)} for v in values]}


def inject(rows: list[list[Any]]) -> None:
    """Queue one result for moto's Athena, laid out as Athena returns a SELECT (header row first)."""
    column_info = [
        {
            "Name": c,
            "Label": c,
            "Type": TYPES.get(c, "varchar"),
            "CatalogName": "hive",
            "SchemaName": "",
            "TableName": "",
            "Nullable": "UNKNOWN",
            "CaseSensitive": True,
        }
        for c in COLUMNS
    ]
    body = {
        "region": REGION,
        "results": [{"rows": [_row(list(COLUMNS)), *[_row(r) for r in rows]], "column_info": column_info}],
    }
    response = requests.post("http://motoapi.amazonaws.com/moto-api/static/athena/query-results", json=body, timeout=10)
    assert response.status_code == 201


DRIFT_ROWS = [
    [
        "email",
        "20240506T083000Z-v2",
        "v2",
        "succeeded",
        "20240506T090000Z-v3",
        "rolled_back",
        "2024-05-06T09:35:00.000000Z",
        4,
        2,
        1,
        1,
        "drift",
        "i-0aaa",
        "v1",
        "20240506T080000Z-v1",
        "InService",
        "Healthy",
        "us-east-1a",
        "on-demand",
        "2024-05-06T08:00:00Z",
    ],
    [
        "email",
        "20240506T083000Z-v2",
        "v2",
        "succeeded",
        "20240506T090000Z-v3",
        "rolled_back",
        "2024-05-06T09:35:00.000000Z",
        4,
        2,
        1,
        1,
        "untagged",
        "i-0bbb",
        None,
        None,
        "InService",
        "Healthy",
        "us-east-1b",
        "spot",
        "2024-05-06T08:31:00Z",
    ],
    [
        "reports",
        "20240506T083000Z-v2",
        "v2",
        "succeeded",
        "20240506T083000Z-v2",
        "succeeded",
        "2024-05-06T09:35:00.000000Z",
        2,
        2,
        0,
        0,
        "ok",
        "i-0ccc",
        "v2",
        "20240506T083000Z-v2",
        "InService",
        "Healthy",
        "us-east-1a",
        "on-demand",
        "2024-05-06T07:00:00Z",
    ],
]


def test_reconcile_on_athena_sends_the_file_text_and_parameters(aws: AwsSession, tmp_path: Path) -> None:
    mf = MotoFleet(aws)
    fleet = make_fleet(["email", "reports"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    mf.create_group(fleet.groups[0], 1)
    mf.create_group(fleet.groups[1], 1)
    inject(DRIFT_ROWS)
    state_manager.set_transition(model_name="athena::execution", transition={"progression": "manual", "times": 2})
    try:
        settings = settings_for(fleet, "production")
        run = reconcile(fleet, settings, mf.services())
    finally:
        state_manager.unset_transition("athena::execution")

    sent = boto3.client("athena", region_name=REGION).get_query_execution(QueryExecutionId=run.result.query_id)[
        "QueryExecution"
    ]
    assert sent["Query"] == (Path(__file__).parent.parent / "athena" / "reconcile.sql").read_text()
    assert sent["ExecutionParameters"] == [
        f"'{APP}'",
        "'production'",
        "'2024-04-07'",  # releases_from: the 30 days of releases ending on the snapshot's day
        "''",
        "''",
        f"'{APP}'",
        "'2024-05-06'",
        "'2024-05-06'",
    ]
    assert sent["QueryExecutionContext"] == {"Database": "deploytool"}
    assert sent["ResultConfiguration"]["OutputLocation"].startswith(f"s3://{BUCKET}/{PREFIX}/athena-results/")
    assert len(mf.clock.intervals) >= 2  # polled through the injected sleep while QUEUED/RUNNING

    report = run.report
    assert report.engine == "athena" and report.bytes_scanned == 0
    email, reports = report.groups
    assert (email.group, email.expected_version, email.instances, email.on_expected) == ("email", "v2", 4, 2)
    assert [(i.instance_id, i.version, i.release) for i in email.drifted] == [("i-0aaa", "v1", "20240506T080000Z-v1")]
    assert [(i.instance_id, i.market) for i in email.untagged] == [("i-0bbb", "spot")]
    assert (reports.instances, reports.on_expected, reports.status) == (2, 2, "ok")
    assert report.drift_count == 2
    assert email.remark == (
        "latest release 20240506T090000Z-v3 failed (rolled back); expected = last good release 20240506T083000Z-v2"
    )
    assert reports.remark is None


def test_untrusted_values_are_quoted_parameters_not_sql(aws: AwsSession) -> None:
    clock = FakeClock()
    engine = AthenaEngine(
        AthenaGateway(aws),
        database="deploytool",
        workgroup="primary",
        output_location=None,
        sleep=clock.sleep,
        clock=clock.now,
    )
    query = load_query("reconcile")
    nasty = "x'; DROP TABLE inventory; --"
    inject([])
    benign = engine.run(
        query,
        {"app": "a", "target": "t", "releases_from": "", "release": "", "dt_from": "2024-01-01", "dt_to": "2024-01-02"},
    )
    inject([])
    hostile = engine.run(
        query,
        {
            "app": "a",
            "target": nasty,
            "releases_from": nasty,
            "release": nasty,
            "dt_from": "2024-01-01",
            "dt_to": "2024-01-02",
        },
    )
    client = boto3.client("athena", region_name=REGION)
    first, second = (
        client.get_query_execution(QueryExecutionId=r.query_id)["QueryExecution"] for r in (benign, hostile)
    )
    assert first["Query"] == second["Query"] == query.text
    assert second["ExecutionParameters"][1:5] == ["'x''; DROP TABLE inventory; --'"] * 4
    assert hostile.rows == ()
    assert parameter_literal("it's") == "'it''s'" and parameter_literal(3) == "3"


def _page(rows: list[list[Any]], *, header: bool, token: str | None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "ResultSet": {
            "Rows": ([_row(["group", "instances"])] if header else []) + [_row(r) for r in rows],
            "ResultSetMetadata": {
                "ColumnInfo": [{"Name": "group", "Type": "varchar"}, {"Name": "instances", "Type": "bigint"}]
            },
        }
    }
    if token:
        page["NextToken"] = token
    return page


def test_results_are_paginated_and_bytes_scanned_reported() -> None:
    gateway = AthenaGateway(stubbed_session())
    clock = FakeClock()
    with Stubber(gateway.client) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": "q-1"})
        stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "RUNNING"}}})
        stub.add_response(
            "get_query_execution",
            {"QueryExecution": {"Status": {"State": "SUCCEEDED"}, "Statistics": {"DataScannedInBytes": 123456}}},
        )
        stub.add_response(
            "get_query_results",
            _page([["a", 1], ["b", 2]], header=True, token="t1"),
            {"QueryExecutionId": "q-1", "MaxResults": 1000},
        )
        stub.add_response(
            "get_query_results",
            _page([["c", None]], header=False, token=None),
            {"QueryExecutionId": "q-1", "MaxResults": 1000, "NextToken": "t1"},
        )
        engine = AthenaEngine(
            gateway, database="db", workgroup="wg", output_location=None, sleep=clock.sleep, clock=clock.now
        )
        result = engine.run(load_query("rollout_timeline"), {"app": "a", "dt_from": "d1", "dt_to": "d2"})
    assert result.rows == (
        {"group": "a", "instances": 1},
        {"group": "b", "instances": 2},
        {"group": "c", "instances": None},
    )
    assert result.bytes_scanned == 123456
    assert clock.intervals == [0.25]


def test_failed_query_is_one_clear_error() -> None:
    gateway = AthenaGateway(stubbed_session())
    clock = FakeClock()
    with Stubber(gateway.client) as stub:
        stub.add_response(
            "get_query_execution",
            {
                "QueryExecution": {
                    "Status": {
                        "State": "FAILED",
                        "StateChangeReason": "TABLE_NOT_FOUND: line 1:15: Table inventory does not exist",
                    }
                }
            },
        )
        with pytest.raises(AwsError, match="q-9 FAILED: TABLE_NOT_FOUND"):
            gateway.wait("q-9", sleep=clock.sleep, clock=clock.now)


def test_ddl_uses_partition_projection_and_runs_on_athena(aws: AwsSession, tmp_path: Path) -> None:
    fleet = make_fleet(["email"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    for name in TABLES:
        ddl = load_table(name).render(bucket=BUCKET, prefix=PREFIX)
        statements = [line for line in ddl.splitlines() if not line.startswith("--")]
        assert not any("MSCK" in line.upper() or "ADD PARTITION" in line.upper() for line in statements)
        assert "'projection.enabled' = 'true'" in ddl and "'projection.app.type' = 'injected'" in ddl
        assert f"'storage.location.template' = 's3://{BUCKET}/{PREFIX}/${{app}}/{name}/dt=${{dt}}/'" in ddl
    assert dict(load_table("inventory").columns)["group"].sql("hive") == "STRING"
    assert load_table("releases").partitions == ("app", "dt")

    mf = MotoFleet(aws)
    out = StringIO()
    statements = athena_setup(
        fleet, Console(file=out, width=200), athena_settings(fleet), apply=True, services=mf.services()
    )
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS deploytool"
    names = [
        d["Name"]
        for d in boto3.client("athena", region_name=REGION).list_databases(CatalogName="AwsDataCatalog")["DatabaseList"]
    ]
    assert "deploytool" in names
    assert "ran: CREATE EXTERNAL TABLE IF NOT EXISTS releases" in out.getvalue()


def test_athena_ddl_apply_creates_the_database_without_it_as_the_query_context(aws: AwsSession, tmp_path: Path) -> None:
    """Athena fails a query whose context database does not exist: CREATE DATABASE goes with no context, the
    tables after it in the new database (what StartQueryExecution is sent, read by a botocore event hook). With
    the fleet's KMS key, Athena is asked to write each result into the fleet's bucket with SSE-KMS."""
    plain = make_fleet(["email"], root=tmp_path, targets=TARGETS, asg="acme-{}-workers")
    key = "alias/deploytool"
    fleet = dataclasses.replace(plain, artifacts=plain.artifacts.model_copy(update={"kms_key_id": key}))
    sent: list[dict[str, Any]] = []
    aws.client("athena").meta.events.register(
        "before-parameter-build.athena.StartQueryExecution", lambda params, **_: sent.append(dict(params))
    )
    athena_setup(
        fleet, Console(file=StringIO()), athena_settings(fleet), apply=True, services=MotoFleet(aws).services()
    )
    first_lines = [next(line for line in s["QueryString"].splitlines() if line.startswith("CREATE")) for s in sent]
    contexts = [(line.rstrip(" ("), s.get("QueryExecutionContext")) for line, s in zip(first_lines, sent, strict=True)]
    assert contexts == [
        ("CREATE DATABASE IF NOT EXISTS deploytool", None),
        ("CREATE EXTERNAL TABLE IF NOT EXISTS inventory", {"Database": "deploytool"}),
        ("CREATE EXTERNAL TABLE IF NOT EXISTS releases", {"Database": "deploytool"}),
    ]
    assert [s["ResultConfiguration"] for s in sent] == [
        {
            "OutputLocation": f"s3://{BUCKET}/{PREFIX}/athena-results/",
            "EncryptionConfiguration": {"EncryptionOption": "SSE_KMS", "KmsKey": key},
        }
    ] * 3
    assert athena_settings(plain).results_kms_key is None


def test_grafana_dashboard_is_built_from_the_query_files() -> None:
    committed = json.loads(grafana.DASHBOARD_FILE.read_text())
    assert committed == grafana.dashboard(), "run `fab grafana-dashboard` after changing athena/*.sql"
    table, timeline = committed["panels"]
    sql = table["targets"][0]["rawSQL"]
    assert sql == grafana_sql(load_query("reconcile"))
    body = sql[sql.index("WITH recent_releases") :]
    assert "?" not in body  # every placeholder became a Grafana variable or macro
    assert "AND target = ${target:sqlstring}\n      AND dt >= cast(current_date - INTERVAL '365' DAY AS varchar)" in sql
    assert "i.dt BETWEEN $__rawTimeFrom('yyyy-MM-dd') AND $__rawTimeTo('yyyy-MM-dd')" in sql
    assert timeline["targets"][0]["format"] == grafana.FORMAT_TIME_SERIES
    # Grafana's Athena data source reads a timestamp without time zone as the time column
    assert 'CAST(from_iso8601_timestamp(snapshot_at) AS timestamp) AS "time"' in timeline["targets"][0]["rawSQL"]
