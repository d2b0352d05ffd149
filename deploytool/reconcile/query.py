"""Stage reconcile/query: run an athena/*.sql query on Athena or on DuckDB, with bound parameters.

Contract: an engine takes a `Query` (the text of one athena/*.sql file) and the parameter values by
name, and returns a `QueryResult` (column names, rows as dicts, what it cost). Values are bound, never
formatted into the SQL: Athena gets them as ExecutionParameters, DuckDB as prepared-statement
parameters, so the SQL text is the same whatever the values.

- AthenaEngine runs the file's text as is in a database holding the `inventory` and `releases`
  tables (athena/*.ddl.sql); reports the bytes Athena scanned.
- DuckDbEngine runs the same text transpiled by sqlglot over local copies of the S3 objects
  (mirror.py): the tables are views over the gzip JSON lines / JSON files with hive partitioning,
  so `dt BETWEEN ? AND ?` prunes whole partitions. With `measure=True` it counts the files DuckDB
  opened (DuckDB's FileSystem log) and the distinct dt partitions among them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb

from deploytool.aws.athena import AthenaGateway
from deploytool.errors import DeployToolError
from deploytool.reconcile.sql import TABLES, Query, TableDef, load_table, to_duckdb

_PARTITION_IN_PATH = re.compile(r"/([^/]+)/dt=([^/]+)/[^/]*$")


@dataclass(frozen=True)
class QueryResult:
    engine: str
    columns: tuple[str, ...]
    rows: tuple[Mapping[str, Any], ...]
    sql: str  # the text the engine ran
    parameters: tuple[str, ...]  # the values bound, in placeholder order
    bytes_scanned: int | None = None
    files_read: int | None = None
    partitions_read: Mapping[str, tuple[str, ...]] | None = None  # table -> dt partitions opened
    query_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def run(self, query: Query, values: Mapping[str, str]) -> QueryResult: ...


class AthenaEngine:
    name = "athena"

    def __init__(
        self,
        gateway: AthenaGateway,
        *,
        database: str,
        workgroup: str,
        output_location: str | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        poll_interval: float = 1.0,
        timeout: float = 900.0,
        results_kms_key: str | None = None,
    ) -> None:
        self.gateway = gateway
        self.database = database
        self.workgroup = workgroup
        self.output_location = output_location
        self.results_kms_key = results_kms_key
        self.sleep = sleep
        self.clock = clock
        self.poll_interval = poll_interval
        self.timeout = timeout

    def run(self, query: Query, values: Mapping[str, str]) -> QueryResult:
        params = query.values(values)
        query_id = self.gateway.start(
            query.text,
            params,
            database=self.database,
            workgroup=self.workgroup,
            output_location=self.output_location,
            kms_key_id=self.results_kms_key,
        )
        execution = self.gateway.wait(
            query_id, sleep=self.sleep, clock=self.clock, poll_interval=self.poll_interval, timeout=self.timeout
        )
        result = self.gateway.results(query_id)
        rows = tuple(dict(zip(result.columns, row, strict=False)) for row in result.rows)
        return QueryResult(
            engine=self.name,
            columns=result.columns,
            rows=rows,
            sql=query.text,
            parameters=tuple(params),
            bytes_scanned=execution.bytes_scanned,
            query_id=query_id,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class DuckDbEngine:
    """DuckDB over a local mirror: root/<prefix>/<app>/<table>/dt=<day>/<object>."""

    name = "duckdb"

    def __init__(
        self, root: Path, prefix: str, *, tables: Sequence[TableDef] | None = None, threads: int | None = None
    ) -> None:
        self.root = root
        self.prefix = prefix
        self.con = duckdb.connect(config={"threads": threads} if threads else {})
        self.con.execute("SET TimeZone = 'UTC'")
        for table in tables if tables is not None else [load_table(name) for name in TABLES]:
            self._create_view(table)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DuckDbEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_view(self, table: TableDef) -> None:
        base = self.root / self.prefix if self.prefix else self.root
        pattern = base / "*" / table.name / "dt=*" / "*.json*"
        columns = table.duckdb_columns()
        if not any(base.glob(f"*/{table.name}/dt=*/*.json*")):
            # No object yet: an empty view with the table's columns, so queries still bind.
            empty = ", ".join(
                f"CAST(NULL AS {kind}) AS {_quote(name)}" for name, kind in [*columns.items(), ("dt", "VARCHAR")]
            )
            self.con.execute(f"CREATE OR REPLACE VIEW {_quote(table.name)} AS SELECT {empty} WHERE false")
            return
        relation = self.con.read_json(
            str(pattern),
            format="newline_delimited",
            columns=columns,
            hive_partitioning=True,
            hive_types={"dt": "VARCHAR"},
        )
        relation.to_view(table.name, replace=True)

    def run(self, query: Query, values: Mapping[str, str], *, measure: bool = False) -> QueryResult:
        params = query.values(values)
        sql = to_duckdb(query.text)
        if measure:
            self.con.execute("CALL truncate_duckdb_logs()")
            self.con.execute("CALL enable_logging('FileSystem')")
        try:
            relation = self.con.sql(sql, params=params)
            columns = tuple(relation.columns)
            # Time-zone-aware timestamps come back as ISO 8601 UTC text (no pytz needed, same as Athena).
            if any(str(t) == "TIMESTAMP WITH TIME ZONE" for t in relation.types):
                relation = relation.project(
                    ", ".join(
                        f"strftime(CAST({_quote(c)} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%fZ') AS {_quote(c)}"
                        if str(t) == "TIMESTAMP WITH TIME ZONE"
                        else _quote(c)
                        for c, t in zip(columns, relation.types, strict=True)
                    )
                )
            raw = relation.fetchall()
        except duckdb.Error as exc:
            raise DeployToolError(f"DuckDB could not run {query.name}.sql: {exc}") from exc
        finally:
            if measure:
                self.con.execute("CALL disable_logging()")
        rows = tuple({c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in raw)
        files: tuple[str, ...] | None = None
        partitions: dict[str, tuple[str, ...]] | None = None
        if measure:
            files = self._opened_files()
            found: dict[str, set[str]] = {}
            for path in files:
                if match := _PARTITION_IN_PATH.search(path):
                    found.setdefault(match.group(1), set()).add(match.group(2))
            partitions = {table: tuple(sorted(days)) for table, days in sorted(found.items())}
        return QueryResult(
            engine=self.name,
            columns=columns,
            rows=rows,
            sql=sql,
            parameters=tuple(params),
            files_read=len(files) if files is not None else None,
            partitions_read=partitions,
        )

    def _opened_files(self) -> tuple[str, ...]:
        messages = self.con.execute("SELECT message FROM duckdb_logs WHERE type = 'FileSystem'").fetchall()
        opened: set[str] = set()
        for (message,) in messages:
            entry = json.loads(message)
            if entry.get("op") == "OPEN":
                opened.add(str(entry.get("path")))
        return tuple(sorted(opened))


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
