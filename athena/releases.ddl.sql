-- Release manifests: one line of JSON per release, written by publish to
-- s3://<bucket>/<prefix>/<app>/releases/dt=YYYY-MM-DD/<release_id>.json and updated by the rollout
-- (`deployments` at each checkpoint, each group's `outcome` as it ends: reconcile.sql reads both).
-- Same partition projection as inventory: `app` injected, `dt` a projected date.
-- Rendered by `fab athena-ddl` with the fleet file's artifacts.bucket and artifacts.prefix.
CREATE EXTERNAL TABLE IF NOT EXISTS releases (
  release_id string,
  version string,
  target string,
  bundle_uri string,
  bucket string,
  `key` string,
  etag string,
  sha256 string,
  `commit` string,
  created_by string,
  created_at string,
  `groups` array<struct<`group`:string,asg:string,expected_version:string,strategy:string,wave:int,outcome:string>>,
  deployments map<string,struct<deployment_id:string,status:string,rollback_deployment_id:string>>
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
  'storage.location.template' = 's3://{{ bucket }}/{{ prefix }}/${app}/releases/dt=${dt}/'
)
