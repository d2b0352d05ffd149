-- Instances per version over time: how a release spread through each group, snapshot by snapshot.
-- Trino/Athena SQL; the sandbox runs this same file on DuckDB through sqlglot.
-- parameters: app, dt_from, dt_to
SELECT
    from_iso8601_timestamp(snapshot_at) AS "time",
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
