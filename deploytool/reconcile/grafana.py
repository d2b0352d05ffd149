"""The Grafana dashboard (Athena data source) built from athena/reconcile.sql and rollout_timeline.sql.

Contract: `dashboard()` returns the dashboard as a dict; athena/grafana-dashboard.json is its
committed rendering (`fab grafana-dashboard` rewrites it; a test keeps the two equal). Each panel's
SQL is the query file with every `?` replaced by a Grafana variable or time macro (sql.grafana_sql),
so the dashboard and the tool run the same query.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploytool.reconcile.sql import ATHENA_DIR, grafana_sql, load_query

DASHBOARD_FILE = ATHENA_DIR / "grafana-dashboard.json"
PLUGIN = "grafana-athena-datasource"
FORMAT_TIME_SERIES = 0
FORMAT_TABLE = 1


def _target(query_name: str, fmt: int) -> dict[str, Any]:
    return {
        "refId": "A",
        "datasource": {"type": PLUGIN, "uid": "${datasource}"},
        "format": fmt,
        "rawSQL": grafana_sql(load_query(query_name)),
        "connectionArgs": {
            "region": "__default",
            "catalog": "__default",
            "database": "${database}",
            "resultReuseEnabled": False,
        },
    }


def _textbox(name: str, label: str, default: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": default,
        "current": {"text": default, "value": default},
        "hide": 0,
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "deploytool-reconcile",
        "title": "deploytool: deployed vs expected",
        "description": "Built from athena/reconcile.sql and athena/rollout_timeline.sql by deploytool.",
        "tags": ["deploytool", "celery", "codedeploy"],
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Athena", "type": "datasource", "query": PLUGIN, "hide": 0},
                _textbox("database", "Database", "deploytool"),
                _textbox("app", "App", "acme-workers"),
                _textbox("target", "Target", "production"),
            ]
        },
        "panels": [
            {
                "id": 1,
                "type": "table",
                "title": "Deployed vs expected: groups, drifted and untagged instances",
                "description": "athena/reconcile.sql: each group's latest snapshot in the time range against "
                "its last good release (the newest that succeeded for it). One row per drifted or untagged "
                "instance, one per group otherwise.",
                "datasource": {"type": PLUGIN, "uid": "${datasource}"},
                "gridPos": {"h": 12, "w": 24, "x": 0, "y": 0},
                "targets": [_target("reconcile", FORMAT_TABLE)],
                "fieldConfig": {
                    "defaults": {},
                    "overrides": [
                        {
                            "matcher": {"id": "byName", "options": "status"},
                            "properties": [
                                {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                                {
                                    "id": "mappings",
                                    "value": [
                                        {
                                            "type": "value",
                                            "options": {
                                                "ok": {"color": "green", "index": 0},
                                                "drift": {"color": "red", "index": 1},
                                                "untagged": {"color": "orange", "index": 2},
                                                "no-release": {"color": "yellow", "index": 3},
                                                "no-instances": {"color": "yellow", "index": 4},
                                            },
                                        }
                                    ],
                                },
                            ],
                        }
                    ],
                },
            },
            {
                "id": 2,
                "type": "timeseries",
                "title": "Instances per version over time",
                "description": "athena/rollout_timeline.sql: instances per group and version at each snapshot.",
                "datasource": {"type": PLUGIN, "uid": "${datasource}"},
                "gridPos": {"h": 10, "w": 24, "x": 0, "y": 12},
                "targets": [_target("rollout_timeline", FORMAT_TIME_SERIES)],
                "fieldConfig": {
                    "defaults": {"custom": {"drawStyle": "line", "stacking": {"mode": "normal"}}},
                    "overrides": [],
                },
            },
        ],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def write(path: Path = DASHBOARD_FILE) -> Path:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(render())
    tmp.replace(path)
    return path
