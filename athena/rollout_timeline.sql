-- Instances per version over time: how a release spread through each group, snapshot by snapshot.
-- Trino/Athena SQL; the sandbox runs this same file on DuckDB through sqlglot.
-- "time" is a timestamp without time zone, in UTC (snapshot_at is UTC): Grafana's Athena data source
-- does not read a timestamp with time zone as a time column.
-- parameters: app, dt_from, dt_to
SELECT
    CAST(from_iso8601_timestamp(snapshot_at) AS timestamp) AS "time",
    "group",
    coalesce(nullif(version, ''), 'untagged') AS version,
    count(*) AS instances
FROM inventory
WHERE app = ?
  AND dt BETWEEN ? AND ?
  AND instance_id IS NOT NULL
  AND coalesce(lifecycle_state, '') NOT LIKE 'Terminat%'
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
