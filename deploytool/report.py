"""Tables for people: the fleet as `fab check` shows it."""

from __future__ import annotations

from rich.table import Table

from deploytool.config import CodeDeployTarget, Fleet
from deploytool.strategy import batches


def fleet_table(fleet: Fleet) -> Table:
    table = Table(title=f"{fleet.app.name}: {len(fleet.groups)} groups ({fleet.path.name})")
    for column in (
        "wave",
        "group",
        "asg",
        "queues",
        "concurrency",
        "prefetch",
        "time limit",
        "visibility",
        "drain",
        "strategy",
    ):
        table.add_column(
            column, justify="right" if column in ("wave", "concurrency", "prefetch") else "left", overflow="fold"
        )
    for wave, groups in fleet.waves():
        for g in groups:
            table.add_row(
                str(wave),
                g.name,
                g.asg,
                ",".join(g.queues or []),
                f"autoscale {g.autoscale[0]},{g.autoscale[1]}" if g.autoscale else str(g.concurrency),
                str(g.prefetch_multiplier),
                f"{g.task_time_limit}s" + (f" (soft {g.task_soft_time_limit}s)" if g.task_soft_time_limit else ""),
                f"{g.visibility_timeout}s"
                + (f" (heartbeat every {g.visibility_heartbeat_step}s)" if g.visibility_heartbeat else ""),
                f"{g.drain_timeout}s",
                g.strategy.label,
            )
    return table


def batch_preview(fleet: Fleet, sizes: dict[str, int]) -> dict[str, list[int]]:
    """Batches each group would deploy in, for a given number of instances per group."""
    return {g.name: batches(g.strategy, sizes.get(g.name, 0)) for g in fleet.groups}


def restart_line(fleet: Fleet) -> str | None:
    """What `fab restart` sends on the fleet's codedeploy targets (None without one): deploymentMode RESTART needs
    CodeDeploy agent 2.1.0+ (app.codedeploy_agent), else each group's last successful revision is redeployed."""
    if not any(isinstance(t, CodeDeployTarget) for t in fleet.targets.values()):
        return None
    agent = fleet.app.codedeploy_agent
    if fleet.app.restart_mode:
        return f"fab restart: deploymentMode RESTART (app.codedeploy_agent = {agent!r}: agents 2.1.0+)"
    declared = f"app.codedeploy_agent = {agent!r}" if agent else "app.codedeploy_agent not set"
    return (
        f"fab restart: redeploys each group's last successful revision ({declared}; deploymentMode RESTART "
        "needs CodeDeploy agent 2.1.0+ on every instance)"
    )
