"""deploytool's task tree: one module per area, assembled into one flat Collection, `ns`.

`fab` finds it through a repository's two-line fabfile.py (`from deploytool.tasks import ns`: invoke uses a
module-level Collection named `ns` as the fabfile's namespace), and the `deploytool` command is a Program over
the same `ns` (deploytool.main). Task names are the functions' names with dashes (`sandbox_up` is
`sandbox-up`), at the top level: `fab deploy`, not `fab rollout.deploy`. Importing this package imports
deploytool.cli, which adapts invoke's parser (one line, exit 2, for every parse error).
"""

from __future__ import annotations

from invoke.collection import Collection

from deploytool.tasks import aws, build, config, doctor, reconcile, rollout, sandbox

ns = Collection(
    config.check,
    config.init,
    build.build,
    build.publish,
    rollout.setup,
    doctor.doctor,
    rollout.deploy,
    rollout.rollback,
    rollout.restart,
    rollout.status,
    reconcile.reconcile,
    reconcile.athena_ddl,
    reconcile.grafana_dashboard,
    aws.iam_policy,
    aws.infra,
    sandbox.sandbox,
    sandbox.sandbox_up,
    sandbox.sandbox_down,
    sandbox.sandbox_interrupt,
    sandbox.hooks,
)
