"""The SQL in athena/: load it, bind its parameters by name, and derive the other forms from it.

Contract: athena/*.sql is the only copy of each query (Trino/Athena dialect). Each file declares its
`?` parameters in order in a `-- parameters: a, b, ...` line; `Query.values` turns a name -> value
mapping into that positional list (a missing name is an error, values are never formatted into
text). From the same text come: the DuckDB form (`to_duckdb`, transpiled by sqlglot), the Grafana
form (`grafana_sql`, each `?` replaced by a Grafana macro). athena/*.ddl.sql holds the table DDL
(Hive dialect, jinja2 placeholders for bucket and prefix); `duckdb_columns` reads the column types
from it, so the DuckDB views have the tables' exact schema.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2
import sqlglot
from sqlglot import TokenType, exp

from deploytool.errors import UsageError
from deploytool.resources import resource_root

ATHENA_DIR = resource_root() / "athena"
SOURCE_DIALECT = "athena"
_PARAMS_LINE = re.compile(r"^--\s*parameters:\s*(.*)$", re.MULTILINE)
# Columns that come from the object's path (hive partitioning), not from the JSON row.
PATH_PARTITIONS = ("dt",)


@dataclass(frozen=True)
class Query:
    name: str
    text: str  # the Athena SQL, exactly as in the file
    parameters: tuple[str, ...]  # the `?` placeholders' names, in order

    def values(self, given: Mapping[str, str]) -> list[str]:
        missing = sorted({p for p in self.parameters if p not in given})
        if missing:
            raise UsageError(f"query {self.name}: no value for parameter(s) {', '.join(missing)}")
        return [given[name] for name in self.parameters]


def _placeholder_spans(text: str) -> list[tuple[int, int]]:
    tokens = sqlglot.Dialect.get_or_raise(SOURCE_DIALECT).tokenize(text)
    return [(t.start, t.end + 1) for t in tokens if t.token_type == TokenType.PLACEHOLDER and t.text == "?"]


def load_query(name: str, directory: Path = ATHENA_DIR) -> Query:
    path = directory / f"{name}.sql"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: query file not found") from None
    declared = _PARAMS_LINE.search(text)
    parameters = tuple(p.strip() for p in declared.group(1).split(",") if p.strip()) if declared else ()
    found = len(_placeholder_spans(text))
    if found != len(parameters):
        raise UsageError(f"{path}: {found} `?` placeholders but the `-- parameters:` line names {len(parameters)}")
    return Query(name=name, text=text, parameters=parameters)


@functools.lru_cache(maxsize=32)
def to_duckdb(text: str) -> str:
    """The same query in DuckDB's dialect (placeholders stay `?`, in the same order)."""
    statements = sqlglot.transpile(text, read=SOURCE_DIALECT, write="duckdb", pretty=True)
    if len(statements) != 1:
        raise UsageError(f"expected one SQL statement, found {len(statements)}")
    return statements[0]


# Grafana's Athena data source has no ExecutionParameters: each `?` becomes a macro or a dashboard
# variable, formatted by Grafana as a quoted SQL string (`:sqlstring` doubles quotes).
GRAFANA_VALUES = {
    "app": "${app:sqlstring}",
    "target": "${target:sqlstring}",
    "release": "''",
    # no fallback to every day in a dashboard: a year of releases (the tool reads RELEASE_DAYS, then every day)
    "releases_from": "cast(current_date - INTERVAL '365' DAY AS varchar)",
    "dt_from": "$__rawTimeFrom('yyyy-MM-dd')",
    "dt_to": "$__rawTimeTo('yyyy-MM-dd')",
}


def grafana_sql(query: Query, values: Mapping[str, str] = GRAFANA_VALUES) -> str:
    """The query with each `?` replaced by its Grafana macro; everything else byte-for-byte."""
    out, last = [], 0
    spans = _placeholder_spans(query.text)
    for (start, end), name in zip(spans, query.parameters, strict=True):
        out.append(query.text[last:start])
        out.append(values[name])
        last = end
    out.append(query.text[last:])
    return "".join(out)


@dataclass(frozen=True)
class TableDef:
    name: str
    template: str  # the DDL with {{ bucket }} and {{ prefix }}
    columns: tuple[tuple[str, exp.DataType], ...]  # data columns, then partition columns
    partitions: tuple[str, ...]

    def render(self, *, bucket: str, prefix: str) -> str:
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
        return env.from_string(self.template).render(bucket=bucket, prefix=prefix)

    def duckdb_columns(self) -> dict[str, str]:
        """read_json's `columns`: every column the JSON row carries (not those from the path)."""
        return {name: kind.sql("duckdb") for name, kind in self.columns if name not in PATH_PARTITIONS}


TABLES = ("inventory", "releases")


def load_table(name: str, directory: Path = ATHENA_DIR) -> TableDef:
    path = directory / f"{name}.ddl.sql"
    template = path.read_text()
    rendered = TableDef(name, template, (), ()).render(bucket="bucket", prefix="prefix")
    create = sqlglot.parse_one(rendered, read="hive")
    schema = create.this
    columns: list[tuple[str, exp.DataType]] = [
        (col.name, col.args["kind"]) for col in schema.expressions if isinstance(col, exp.ColumnDef)
    ]
    partitions: list[str] = []
    for prop in create.args["properties"].expressions:
        if isinstance(prop, exp.PartitionedByProperty):
            for col in prop.this.expressions:
                partitions.append(col.name)
                columns.append((col.name, col.args["kind"]))
    return TableDef(name=name, template=template, columns=tuple(columns), partitions=tuple(partitions))
