"""Athena gateway: run one parameterized query and read its results.

Values never go into the query text: they travel as ExecutionParameters, which Athena binds to the
`?` placeholders in order. Athena takes each parameter as a SQL literal, so a string parameter is
sent quoted, with its quotes doubled (`it's` -> `'it''s'`); the query text stays the same whatever
the values. Polling waits through the injected `sleep`; results are read with the paginator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error
from deploytool.errors import AwsError

DONE_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
_INTEGER_TYPES = frozenset({"tinyint", "smallint", "integer", "int", "bigint"})
_FLOAT_TYPES = frozenset({"double", "float", "real"})


def parameter_literal(value: str | int | bool) -> str:
    """An ExecutionParameters entry: a SQL literal that Athena binds to one `?`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class QueryExecution:
    query_id: str
    state: str
    reason: str = ""
    bytes_scanned: int = 0
    engine_ms: int = 0


@dataclass(frozen=True)
class ResultSet:
    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def _value(cell: dict[str, Any], kind: str) -> Any:
    if "VarCharValue" not in cell:
        return None
    text: str = cell["VarCharValue"]
    if kind in _INTEGER_TYPES:
        return int(text)
    if kind in _FLOAT_TYPES:
        return float(text)
    if kind == "boolean":
        return text.lower() == "true"
    return text


class AthenaGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("athena")

    def start(
        self,
        sql: str,
        parameters: Sequence[str | int | bool],
        *,
        database: str | None,
        workgroup: str,
        output_location: str | None = None,
        kms_key_id: str | None = None,
    ) -> str:
        """Start a query; `database` is its context (None: none, for CREATE DATABASE of a database not there yet).
        With `kms_key_id`, Athena writes the results to `output_location` with SSE-KMS under that key (a bucket
        policy that enforces aws:kms accepts them)."""
        args: dict[str, Any] = {"QueryString": sql, "WorkGroup": workgroup}
        if database is not None:
            args["QueryExecutionContext"] = {"Database": database}
        if parameters:
            args["ExecutionParameters"] = [parameter_literal(v) for v in parameters]
        if output_location:
            args["ResultConfiguration"] = {"OutputLocation": output_location}
            if kms_key_id:
                args["ResultConfiguration"]["EncryptionConfiguration"] = {
                    "EncryptionOption": "SSE_KMS",
                    "KmsKey": kms_key_id,
                }
        try:
            return str(self.client.start_query_execution(**args)["QueryExecutionId"])
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, "Athena StartQueryExecution") from exc

    def execution(self, query_id: str) -> QueryExecution:
        try:
            raw = self.client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"Athena GetQueryExecution {query_id}") from exc
        status = raw.get("Status", {})
        stats = raw.get("Statistics", {})
        return QueryExecution(
            query_id=query_id,
            state=status.get("State", "UNKNOWN"),
            reason=status.get("StateChangeReason", ""),
            bytes_scanned=int(stats.get("DataScannedInBytes", 0)),
            engine_ms=int(stats.get("EngineExecutionTimeInMillis", 0)),
        )

    def wait(
        self,
        query_id: str,
        *,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        poll_interval: float = 1.0,
        timeout: float = 900.0,
    ) -> QueryExecution:
        """Poll until the query ends; AwsError unless it SUCCEEDED."""
        deadline = clock() + timeout
        interval = min(poll_interval, 0.25)
        while True:
            execution = self.execution(query_id)
            if execution.state in DONE_STATES:
                break
            if clock() >= deadline:
                self.stop(query_id)
                raise AwsError(f"Athena query {query_id} still {execution.state} after {timeout:.0f} s; stopped it")
            sleep(interval)
            interval = min(interval * 2, poll_interval)
        if execution.state != "SUCCEEDED":
            why = f": {execution.reason}" if execution.reason else ""
            raise AwsError(f"Athena query {query_id} {execution.state}{why}")
        return execution

    def stop(self, query_id: str) -> None:
        try:
            self.client.stop_query_execution(QueryExecutionId=query_id)
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"Athena StopQueryExecution {query_id}") from exc

    def _pages(self, query_id: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("get_query_results")
        try:
            yield from paginator.paginate(QueryExecutionId=query_id, PaginationConfig={"PageSize": 1000})
        except (ClientError, BotoCoreError) as exc:
            raise describe_aws_error(exc, f"Athena GetQueryResults {query_id}") from exc

    def results(self, query_id: str) -> ResultSet:
        """Every row of a finished SELECT, typed by the column info; the header row is dropped."""
        columns: tuple[str, ...] = ()
        types: tuple[str, ...] = ()
        rows: list[tuple[Any, ...]] = []
        first = True
        for page in self._pages(query_id):
            result = page.get("ResultSet", {})
            if not columns:
                info = result.get("ResultSetMetadata", {}).get("ColumnInfo", [])
                columns = tuple(c["Name"] for c in info)
                types = tuple(c.get("Type", "varchar").lower() for c in info)
            raw_rows = result.get("Rows", [])
            if first and raw_rows:
                header = tuple(c.get("VarCharValue") for c in raw_rows[0].get("Data", []))
                if header == columns:  # a SELECT's first row holds the column names
                    raw_rows = raw_rows[1:]
            first = False
            for raw in raw_rows:
                data = raw.get("Data", [])
                rows.append(tuple(_value(cell, kind) for cell, kind in zip(data, types, strict=False)))
        return ResultSet(columns=columns, types=types, rows=tuple(rows))

    def run_ddl(
        self,
        sql: str,
        *,
        database: str | None,
        workgroup: str,
        output_location: str | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        kms_key_id: str | None = None,
    ) -> QueryExecution:
        query_id = self.start(
            sql, (), database=database, workgroup=workgroup, output_location=output_location, kms_key_id=kms_key_id
        )
        return self.wait(query_id, sleep=sleep, clock=clock)
