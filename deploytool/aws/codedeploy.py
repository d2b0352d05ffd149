"""CodeDeploy gateway: every CodeDeploy call deploytool makes, through the session's one shared client.

Contract: methods take and return plain Python data (the service's JSON shapes, minus
ResponseMetadata); batch reads are chunked to the service's limits (BatchGetDeployments and
BatchGetDeploymentTargets: 25 ids; BatchGetDeploymentGroups: 100) and lists are paginated. Throttling
is the client's business (adaptive retries, shared by every thread); an error that survives the
retries becomes an AwsError with one line saying what failed. "Does not exist" reads return None.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploytool.aws.session import AwsSession, describe_aws_error, error_code
from deploytool.errors import AwsError

BATCH_DEPLOYMENTS = 25
BATCH_TARGETS = 25
BATCH_GROUPS = 100

Json = dict[str, Any]


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CodeDeployGateway:
    def __init__(self, session: AwsSession) -> None:
        self.client = session.client("codedeploy")

    def _call(self, operation: str, what: str, **params: Any) -> Json:
        try:
            response: Json = getattr(self.client, operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, what) from exc
        response.pop("ResponseMetadata", None)
        return response

    def _error(self, exc: Exception, what: str) -> AwsError:
        code = error_code(exc)
        if code == "DeploymentGroupDoesNotExistException":
            return AwsError(f"{what}: the deployment group does not exist (run `fab setup` for this target)")
        if code == "ApplicationDoesNotExistException":
            return AwsError(f"{what}: the CodeDeploy application does not exist (run `fab setup` for this target)")
        if code == "DeploymentConfigDoesNotExistException":
            return AwsError(f"{what}: the deployment config does not exist (run `fab setup` for this target)")
        return describe_aws_error(exc, what)

    def _pages(self, operation: str, what: str, key: str, params: Json) -> list[str]:
        """Every item of a paginated list call (nextToken)."""
        items: list[str] = []
        while True:
            page = self._call(operation, what, **params)
            items += page.get(key, [])
            if not page.get("nextToken"):
                return items
            params = {**params, "nextToken": page["nextToken"]}

    def _get(self, operation: str, what: str, missing: str, **params: Any) -> Json | None:
        try:
            return self._call(operation, what, **params)
        except AwsError as exc:
            if error_code(exc.__cause__ or exc) == missing:
                return None
            raise

    # -- applications, groups, configs, revisions ---------------------------------------------------

    def get_application(self, name: str) -> Json | None:
        found = self._get(
            "get_application", f"GetApplication {name}", "ApplicationDoesNotExistException", applicationName=name
        )
        return None if found is None else dict(found["application"])

    def create_application(self, name: str) -> str:
        return str(
            self._call(
                "create_application", f"CreateApplication {name}", applicationName=name, computePlatform="Server"
            )["applicationId"]
        )

    def list_applications(self) -> list[str]:
        return self._pages("list_applications", "ListApplications", "applications", {})

    def list_deployment_groups(self, app: str) -> list[str]:
        return self._pages(
            "list_deployment_groups", f"ListDeploymentGroups {app}", "deploymentGroups", {"applicationName": app}
        )

    def get_deployment_groups(self, app: str, names: Sequence[str]) -> list[Json]:
        out: list[Json] = []
        for chunk in chunks(list(names), BATCH_GROUPS):
            page = self._call(
                "batch_get_deployment_groups",
                f"BatchGetDeploymentGroups {app}",
                applicationName=app,
                deploymentGroupNames=list(chunk),
            )
            out += page.get("deploymentGroupsInfo", [])
        return out

    def get_deployment_group(self, app: str, name: str) -> Json | None:
        found = self._get(
            "get_deployment_group",
            f"GetDeploymentGroup {app}/{name}",
            "DeploymentGroupDoesNotExistException",
            applicationName=app,
            deploymentGroupName=name,
        )
        return None if found is None else dict(found["deploymentGroupInfo"])

    def create_deployment_group(self, app: str, name: str, settings: Mapping[str, Any]) -> str:
        return str(
            self._call(
                "create_deployment_group",
                f"CreateDeploymentGroup {app}/{name}",
                applicationName=app,
                deploymentGroupName=name,
                **settings,
            )["deploymentGroupId"]
        )

    def update_deployment_group(self, app: str, name: str, settings: Mapping[str, Any]) -> None:
        self._call(
            "update_deployment_group",
            f"UpdateDeploymentGroup {app}/{name}",
            applicationName=app,
            currentDeploymentGroupName=name,
            **settings,
        )

    def get_deployment_config(self, name: str) -> Json | None:
        found = self._get(
            "get_deployment_config",
            f"GetDeploymentConfig {name}",
            "DeploymentConfigDoesNotExistException",
            deploymentConfigName=name,
        )
        return None if found is None else dict(found["deploymentConfigInfo"])

    def create_deployment_config(self, name: str, minimum_healthy_hosts: Mapping[str, Any]) -> str:
        return str(
            self._call(
                "create_deployment_config",
                f"CreateDeploymentConfig {name}",
                deploymentConfigName=name,
                minimumHealthyHosts=dict(minimum_healthy_hosts),
                computePlatform="Server",
            )["deploymentConfigId"]
        )

    def register_revision(self, app: str, revision: Mapping[str, Any], description: str) -> None:
        self._call(
            "register_application_revision",
            f"RegisterApplicationRevision {app}",
            applicationName=app,
            revision=dict(revision),
            description=description,
        )

    # -- deployments ------------------------------------------------------------------------------

    def create_deployment(self, app: str, group: str, params: Mapping[str, Any]) -> str:
        return str(
            self._call(
                "create_deployment",
                f"CreateDeployment {app}/{group}",
                applicationName=app,
                deploymentGroupName=group,
                **params,
            )["deploymentId"]
        )

    def get_deployments(self, deployment_ids: Sequence[str]) -> dict[str, Json]:
        """DeploymentInfo by id, 25 ids a BatchGetDeployments call."""
        out: dict[str, Json] = {}
        for chunk in chunks(list(deployment_ids), BATCH_DEPLOYMENTS):
            page = self._call("batch_get_deployments", "BatchGetDeployments", deploymentIds=list(chunk))
            for info in page.get("deploymentsInfo", []):
                out[info["deploymentId"]] = info
        return out

    def list_deployments(
        self, app: str, group: str, statuses: Sequence[str], *, created_after: float | None = None
    ) -> list[str]:
        """Deployment ids of a group with one of `statuses` (all when empty), created at or after `created_after`
        (epoch seconds) when given."""
        params: Json = {"applicationName": app, "deploymentGroupName": group, "includeOnlyStatuses": list(statuses)}
        if created_after is not None:
            params["createTimeRange"] = {"start": datetime.fromtimestamp(created_after, UTC)}
        return self._pages("list_deployments", f"ListDeployments {app}/{group}", "deployments", params)

    def stop_deployment(self, deployment_id: str, *, rollback: bool) -> str:
        try:
            page = self._call(
                "stop_deployment",
                f"StopDeployment {deployment_id}",
                deploymentId=deployment_id,
                autoRollbackEnabled=rollback,
            )
        except AwsError as exc:
            if error_code(exc.__cause__ or exc) == "DeploymentAlreadyCompletedException":
                return "AlreadyCompleted"
            raise
        return str(page.get("status", ""))

    def list_targets(self, deployment_id: str, statuses: Sequence[str] = ()) -> list[str]:
        params: Json = {"deploymentId": deployment_id}
        if statuses:
            params["targetFilters"] = {"TargetStatus": list(statuses)}
        return self._pages("list_deployment_targets", f"ListDeploymentTargets {deployment_id}", "targetIds", params)

    def get_targets(self, deployment_id: str, target_ids: Sequence[str]) -> list[Json]:
        out: list[Json] = []
        for chunk in chunks(list(target_ids), BATCH_TARGETS):
            page = self._call(
                "batch_get_deployment_targets",
                f"BatchGetDeploymentTargets {deployment_id}",
                deploymentId=deployment_id,
                targetIds=list(chunk),
            )
            out += page.get("deploymentTargets", [])
        return out
