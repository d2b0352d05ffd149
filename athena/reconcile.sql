-- Deployed vs expected, per group: each group's latest inventory snapshot (inside the dt window)
-- against the expected version: that of the newest release on this target whose outcome for the
-- group is `succeeded` (a failed, rolled-back, stopped or still running release never becomes
-- expected), or of the release given, whatever its outcome. Trino/Athena SQL; the sandbox runs this
-- same file on DuckDB through sqlglot. Values are never written into this text: they are the `?`
-- parameters, in this order:
-- parameters: app, target, releases_from, release, release, app, dt_from, dt_to
--
-- releases_from bounds the releases read to dt >= releases_from (a day, yyyy-MM-dd), so Athena does
-- not list every day since the projection's start on each run: the tool passes the start of its
-- window of recent releases, and '' (every day) when a group found no succeeded release in it.
--
-- One row per drifted or untagged instance, plus one row for every group with none (so every group
-- appears); instances, on_expected, drifted and untagged are the group's totals on every row.
-- status: ok | drift (runs another version) | untagged (no deploytool:version tag) |
--         no-release (no release succeeded for the group) | no-instances (the ASG is empty)
-- expected_outcome is the expected release's outcome for the group; latest_release_id and
-- latest_outcome name the group's newest release whatever its outcome (the report says so when it
-- is not the expected one: a failed release, one still running).
WITH recent_releases AS (
    -- This target's releases from releases_from on. Filtered here, before the unnest: DuckDB does not
    -- push a filter on dt through the CROSS JOIN UNNEST below, and would read every day's manifests.
    SELECT *
    FROM releases
    WHERE app = ?
      AND target = ?
      AND dt >= ?
),
release_entries AS (
    -- Unnest by index: Trino expands an unnested array of rows into one column per field,
    -- DuckDB into one struct column; indexing reads the same in both.
    SELECT
        r.release_id,
        r.created_at,
        element_at(r."groups", g.i)."group" AS group_name,
        element_at(r."groups", g.i).expected_version AS expected_version,
        element_at(r."groups", g.i).outcome AS outcome,
        element_at(r.deployments, element_at(r."groups", g.i)."group").status AS deployment_status
    FROM recent_releases AS r
    CROSS JOIN UNNEST(sequence(1, greatest(cardinality(r."groups"), 1))) AS g (i)
),
release_groups AS (
    -- Outcome per group: `groups[].outcome` as the rollout writes it; in a manifest written before
    -- that field, the group's recorded deployment status (Succeeded counts as succeeded; with no
    -- deployment recorded the outcome is unknown, NULL, and never expected).
    SELECT
        release_id,
        created_at,
        group_name,
        expected_version,
        coalesce(outcome, CASE
            WHEN deployment_status = 'Succeeded' THEN 'succeeded'
            WHEN deployment_status = 'Failed' THEN 'failed'
            WHEN deployment_status = 'Stopped' THEN 'stopped'
            WHEN deployment_status IS NOT NULL THEN 'pending'
        END) AS outcome
    FROM release_entries
    WHERE group_name IS NOT NULL
),
expected AS (
    SELECT group_name, release_id, expected_version, outcome AS expected_outcome
    FROM (
        SELECT
            release_groups.*,
            row_number() OVER (PARTITION BY group_name ORDER BY created_at DESC, release_id DESC) AS rn
        FROM release_groups
        WHERE (? = '' AND outcome = 'succeeded')
           OR release_id = ?
    ) AS ranked
    WHERE rn = 1
),
release_state AS (
    -- Every group some release lists, its expected release (if any) and its newest release.
    SELECT
        newest.group_name,
        e.release_id,
        e.expected_version,
        e.expected_outcome,
        newest.release_id AS latest_release_id,
        newest.outcome AS latest_outcome
    FROM (
        SELECT
            release_groups.*,
            row_number() OVER (PARTITION BY group_name ORDER BY created_at DESC, release_id DESC) AS rn
        FROM release_groups
    ) AS newest
    LEFT JOIN expected AS e
      ON e.group_name = newest.group_name
    WHERE newest.rn = 1
),
latest AS (
    -- rank() ties every row of a group's newest snapshot at 1. (Not max() OVER: DuckDB rewrites
    -- that into a self-join whose second scan loses the dt filter and reads every partition.)
    SELECT *
    FROM (
        SELECT
            i.*,
            rank() OVER (PARTITION BY i."group" ORDER BY i.snapshot_at DESC) AS snapshot_rank
        FROM inventory AS i
        WHERE i.app = ?
          AND i.dt BETWEEN ? AND ?
    ) AS ranked_snapshots
    WHERE snapshot_rank = 1
),
fleet_now AS (
    SELECT *
    FROM latest
    WHERE instance_id IS NOT NULL
      AND coalesce(lifecycle_state, '') NOT LIKE 'Terminat%'
),
group_snapshots AS (
    SELECT DISTINCT "group", snapshot_at FROM latest
),
classified AS (
    SELECT
        coalesce(s."group", e.group_name) AS group_name,
        e.release_id,
        e.expected_version,
        e.expected_outcome,
        e.latest_release_id,
        e.latest_outcome,
        s.snapshot_at,
        c.instance_id,
        nullif(c.version, '') AS version,
        c."release" AS instance_release,
        c.lifecycle_state,
        c.health,
        c.az,
        c.market,
        c.launch_time,
        CASE
            WHEN c.instance_id IS NULL THEN 'no-instances'
            WHEN e.expected_version IS NULL THEN 'no-release'
            WHEN nullif(c.version, '') IS NULL THEN 'untagged'
            WHEN c.version = e.expected_version THEN 'ok'
            ELSE 'drift'
        END AS status
    FROM group_snapshots AS s
    LEFT JOIN fleet_now AS c
      ON c."group" = s."group"
    FULL OUTER JOIN release_state AS e
      ON s."group" = e.group_name
),
counted AS (
    SELECT
        classified.*,
        count(instance_id) OVER (PARTITION BY group_name) AS instances,
        count_if(status = 'ok') OVER (PARTITION BY group_name) AS on_expected,
        count_if(status = 'drift') OVER (PARTITION BY group_name) AS drifted,
        count_if(status = 'untagged') OVER (PARTITION BY group_name) AS untagged,
        row_number() OVER (
            PARTITION BY group_name
            ORDER BY CASE WHEN status IN ('drift', 'untagged') THEN 0 ELSE 1 END, instance_id
        ) AS group_row
    FROM classified
)
SELECT
    group_name AS "group",
    release_id,
    expected_version,
    expected_outcome,
    latest_release_id,
    latest_outcome,
    snapshot_at,
    instances,
    on_expected,
    drifted,
    untagged,
    status,
    instance_id,
    version,
    instance_release AS "release",
    lifecycle_state,
    health,
    az,
    market,
    launch_time
FROM counted
WHERE status IN ('drift', 'untagged') OR group_row = 1
ORDER BY group_name, group_row
