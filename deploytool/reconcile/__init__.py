"""Stage reconcile: prove that every worker runs the release it should.

    tags.py       after each group's deployment, tag its succeeded instances (version, release, time)
    tagger.py     the rollout Reporter that calls tags.py as each group's deployment ends
    inventory.py  snapshot each group's ASG + instances to S3 as gzip JSON lines (dt partitions)
    layout.py     the S3 keys of inventory and release manifests (CONTRACTS §3)
    sql.py        athena/*.sql and *.ddl.sql: parameters, the DuckDB and Grafana forms, table columns
    mirror.py     copy the needed S3 partitions to a local directory (DuckDB in the sandbox)
    query.py      run a query on Athena (ExecutionParameters) or DuckDB (prepared parameters)
    report.py     deployed vs expected per group; rich tables, JSON, markdown
    fix.py        redeploy the expected revision to the drifted instances only
    fix_runner.py the FixRunner on the rollout orchestrator (the target's backend)
    pipeline.py   snapshot -> query -> report, wired over injected gateways and clock
    command.py    what `fab reconcile` and the end of `fab deploy` run
"""
