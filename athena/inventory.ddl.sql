-- The fleet inventory: one row per instance per snapshot, written by `fab reconcile` as gzip JSON lines
-- to s3://<bucket>/<prefix>/<app>/inventory/dt=YYYY-MM-DD/<snapshot_at>-<n>.json.gz.
-- Partition projection: `app` is injected (every query filters app = ?), `dt` is a projected date, so
-- new days and new apps need no MSCK REPAIR and no ALTER TABLE ADD PARTITION.
-- A group whose ASG had no instances writes one row with instance_id null (the snapshot records it).
-- Rendered by `fab athena-ddl` with the fleet file's artifacts.bucket and artifacts.prefix.
CREATE EXTERNAL TABLE IF NOT EXISTS inventory (
  snapshot_at string,
  instance_id string,
  asg string,
  `group` string,
  az string,
  lifecycle_state string,
  health string,
  state string,
  market string,
  launch_time string,
  version string,
  `release` string,
  deployed_at string
)
PARTITIONED BY (app string, dt string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://{{ bucket }}/{{ prefix }}/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.app.type' = 'injected',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://{{ bucket }}/{{ prefix }}/${app}/inventory/dt=${dt}/'
)
