"""Stage reconcile: prove that every worker runs the release it should.

The S3 keys and times it reads and writes are deploytool.model's; the deploytool:* instance tags it reads
are written by the rollout as each group ends (deploytool.rollout.tags, deploytool.rollout.tagger).

    inventory.py  snapshot each group's ASG + instances to S3 as gzip JSON lines (dt partitions)
    sql.py        athena/*.sql and *.ddl.sql: parameters, the DuckDB and Grafana forms, table columns
    mirror.py     copy the needed S3 partitions to a local directory (DuckDB in the sandbox)
    query.py      run a query on Athena (ExecutionParameters) or DuckDB (prepared parameters)
    report.py     deployed vs expected per group; rich tables, JSON, markdown
    fix.py        redeploy the expected revision to the drifted instances only
    fix_runner.py the FixRunner on the rollout orchestrator (the target's backend)
    pipeline.py   snapshot -> query -> report, wired over injected gateways and clock
    command.py    what `fab reconcile` and the end of `fab deploy` run
"""
