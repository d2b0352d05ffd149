"""The fleet file: good files load, every bad one fails with one exact, actionable line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from invoke import Context

from deploytool.config import Strategy, load_fleet
from deploytool.errors import ConfigError
from deploytool.tasks import config as config_tasks

ROOT = Path(__file__).resolve().parent.parent

APP = '[app]\nname = "acme"\ncelery_app = "acme.app:app"\n'
ARTIFACTS = '[artifacts]\nbucket = "acme-artifacts"\n'
DEFAULTS = "[defaults]\ntask_time_limit = 300\nvisibility_timeout = 1800\n"
EMAIL = '[[groups]]\nname = "email"\nasg = "asg-email"\nqueues = ["email"]\n'
VIDEO = '[[groups]]\nname = "video"\nasg = "asg-video"\nqueues = ["video"]\nstrategy = "HalfAtATime"\n'
TARGETS = '[targets.sandbox]\nbackend = "local"\n'


def doc(
    *,
    app: str = APP,
    artifacts: str = ARTIFACTS,
    defaults: str = DEFAULTS,
    email: str = EMAIL,
    video: str = VIDEO,
    targets: str = TARGETS,
    extra: str = "",
) -> str:
    return "\n".join((extra + app, artifacts, defaults, email, video, targets))


def write(tmp_path: Path, text: str) -> Path:
    """The fleet file, next to the app source it names by default (app/)."""
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    (tmp_path / "app").mkdir(exist_ok=True)
    return path


GOOD = [
    ("minimal", doc(), {"video": Strategy("HalfAtATime"), "email": Strategy("OneAtATime")}),
    (
        "host count",
        doc(
            video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_hosts = 2 }"),
            targets=TARGETS + "instances = { video = 3 }\n",
        ),
        {"video": Strategy("HostCount", 2)},
    ),
    (
        "percent 49",
        doc(video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_percent = 49 }")),
        {"video": Strategy("FleetPercent", 49)},
    ),
    ("defaults strategy", doc(defaults=DEFAULTS + 'strategy = "AllAtOnce"\n'), {"email": Strategy("AllAtOnce")}),
    (
        "drain at the limit",
        doc(video=VIDEO + "drain_timeout = 3540\ntask_time_limit = 3000\nvisibility_timeout = 7200\n"),
        {"video": Strategy("HalfAtATime")},
    ),
]


@pytest.mark.parametrize(("text", "strategies"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_good_fleet_files_load(tmp_path: Path, text: str, strategies: dict[str, Strategy]) -> None:
    fleet = load_fleet(write(tmp_path, text))
    assert [g.name for g in fleet.groups] == ["email", "video"]
    for name, strategy in strategies.items():
        assert fleet.group(name).strategy == strategy
    assert fleet.default_target == "sandbox"


BAD = [
    (
        "partial_failure misspelt",
        doc(extra='[rollout]\npartial_failure = "rolback"\n'),
        "rollout.partial_failure: got 'rolback'; allowed: 'rollback' or 'keep'",
    ),
    (
        "rollout unknown key",
        doc(extra='[rollout]\npartial = "keep"\n'),
        "rollout.partial: unknown key (did you mean 'partial_failure'?); allowed: partial_failure, bake",
    ),
    (
        "unknown top key",
        doc(extra='[artefacts]\nbucket = "x"\n'),
        "artefacts: unknown key (did you mean 'artifacts'?); allowed: app, artifacts, aws, rollout, defaults, "
        "groups, targets, default_target",
    ),
    (
        "unknown group key",
        doc(video=VIDEO + "concurency = 3\n"),
        "groups[1].concurency: unknown key (did you mean 'concurrency'?); allowed: name, asg, queues, "
        "concurrency, prefetch_multiplier, acks_late, max_tasks_per_child, autoscale, task_time_limit, "
        "task_soft_time_limit, visibility_timeout, visibility_heartbeat, visibility_heartbeat_step, on_rebalance, "
        "on_terminated, drain_timeout, restart, handoff_max_draining, handoff_min_free_mb, strategy, wave, bake, "
        "not_enough_data, suspend_terminate, alarms",
    ),
    (
        "unknown app key",
        doc(app=APP + 'celery = "x"\n'),
        "app.celery: unknown key (did you mean 'celery_app'?); allowed: name, source, celery_app, "
        "install_dir, python, env_file, user, codedeploy_agent",
    ),
    (
        "unknown default key",
        doc(defaults=DEFAULTS + "prefetch = 4\n"),
        "defaults.prefetch: unknown key; allowed: queues, concurrency, prefetch_multiplier, acks_late, "
        "max_tasks_per_child, autoscale, task_time_limit, task_soft_time_limit, visibility_timeout, "
        "visibility_heartbeat, visibility_heartbeat_step, on_rebalance, on_terminated, drain_timeout, restart, "
        "handoff_max_draining, handoff_min_free_mb, strategy, wave, bake, not_enough_data, suspend_terminate, alarms",
    ),
    (
        "unknown target key",
        doc(targets=TARGETS + "instances_per_grup = 3\n"),
        "targets.sandbox.instances_per_grup: unknown key (did you mean 'instances_per_group'?); "
        "allowed: backend, instances_per_group, instances, broker, root",
    ),
    (
        "bad strategy",
        doc(video=VIDEO.replace('"HalfAtATime"', '"HalfAtTime"')),
        "groups[1].strategy: unknown strategy 'HalfAtTime' (did you mean 'HalfAtATime'?); allowed: "
        "AllAtOnce, HalfAtATime, OneAtATime, {min_healthy_hosts = N} (N >= 0) or {min_healthy_percent = "
        "P} (0 <= P < 100)",
    ),
    (
        "percent 100",
        doc(video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_percent = 100 }")),
        "groups[1].strategy: min_healthy_percent must be >= 0 and < 100, got 100 (CodeDeploy needs at "
        "least one instance it may take out of service)",
    ),
    (
        "strategy table two keys",
        doc(video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_percent = 10, min_healthy_hosts = 1 }")),
        "groups[1].strategy: strategy table {'min_healthy_percent': 10, 'min_healthy_hosts': 1} must "
        "have exactly one key; allowed: AllAtOnce, HalfAtATime, OneAtATime, {min_healthy_hosts = N} (N "
        ">= 0) or {min_healthy_percent = P} (0 <= P < 100)",
    ),
    (
        "negative hosts",
        doc(video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_hosts = -1 }")),
        "groups[1].strategy: min_healthy_hosts must be >= 0, got -1",
    ),
    (
        "duplicate name",
        doc(video=VIDEO.replace('"video"', '"email"', 1)),
        "groups[1].name: duplicate group name 'email' (also groups[0])",
    ),
    (
        "duplicate asg",
        doc(video=VIDEO.replace('"asg-video"', '"asg-email"')),
        "groups[1].asg: ASG 'asg-email' already belongs to groups[0]; CodeDeploy needs one deployment "
        "group per ASG (two cause lifecycle hook timeouts)",
    ),
    (
        "visibility too short",
        doc(video=VIDEO + "task_time_limit = 1700\n"),
        "defaults.visibility_timeout: got 1800; must exceed task_time_limit + 120 s = 1820 (else the "
        "broker redelivers running tasks and they run twice); on SQS, visibility_heartbeat = true allows a short "
        "one (inherited by groups[1], 'video')",
    ),
    (
        "visibility shorter than the heartbeat's step allows",
        doc(video=VIDEO + "visibility_heartbeat = true\nvisibility_heartbeat_step = 30\nvisibility_timeout = 40\n"),
        "groups[1].visibility_timeout: got 40; with visibility_heartbeat it must exceed visibility_heartbeat_step "
        "+ 10 s = 40 (else a message expires between two beats and runs twice)",
    ),
    (
        "unknown rebalance policy",
        doc(video=VIDEO + 'on_rebalance = "stop"\n'),
        "groups[1].on_rebalance: got 'stop'; allowed: 'drain' or 'ignore'",
    ),
    (
        "heartbeat step out of range",
        doc(video=VIDEO + "visibility_heartbeat = true\nvisibility_heartbeat_step = 0\n"),
        "groups[1].visibility_heartbeat_step: got 0; allowed: a number >= 1",
    ),
    (
        "visibility in defaults",
        doc(defaults="[defaults]\ntask_time_limit = 3500\n"),
        "groups[0].visibility_timeout: got 3600; must exceed task_time_limit + 120 s = 3620 (else the "
        "broker redelivers running tasks and they run twice); on SQS, visibility_heartbeat = true allows a short one",
    ),
    (
        "drain over limit",
        doc(video=VIDEO + "drain_timeout = 3541\n"),
        "groups[1].drain_timeout: got 3541; allowed: at most 3540 s (CodeDeploy gives a lifecycle event "
        "3600 s; 60 s are kept for the cold shutdown)",
    ),
    (
        "bad type concurrency",
        doc(video=VIDEO + 'concurrency = "4"\n'),
        "groups[1].concurrency: got '4'; allowed: a whole number",
    ),
    (
        "bool for int",
        doc(video=VIDEO + "concurrency = true\n"),
        "groups[1].concurrency: got True; allowed: a whole number",
    ),
    (
        "float for int",
        doc(video=VIDEO + "task_time_limit = 1.5\n"),
        "groups[1].task_time_limit: got 1.5; allowed: a whole number",
    ),
    (
        "concurrency zero",
        doc(video=VIDEO + "concurrency = 0\n"),
        "groups[1].concurrency: got 0; allowed: a number >= 1",
    ),
    ("missing asg", doc(video=VIDEO.replace('asg = "asg-video"\n', "")), "groups[1].asg: is required"),
    (
        "missing queues",
        doc(video=VIDEO.replace('queues = ["video"]\n', "")),
        "groups[1].queues: is required: the queues this group's workers consume",
    ),
    (
        "empty queues",
        doc(video=VIDEO.replace('queues = ["video"]', "queues = []")),
        "groups[1].queues: got []; allowed: at least 1 item(s)",
    ),
    (
        "bad queue name",
        doc(video=VIDEO.replace('queues = ["video"]', 'queues = ["video", "bad queue"]')),
        "groups[1].queues[1]: got 'bad queue'; allowed: letters, digits, '_', '.' and '-' (at most 80, "
        "starting with a letter or digit)",
    ),
    (
        "dup queue",
        doc(video=VIDEO.replace('queues = ["video"]', 'queues = ["video", "video"]')),
        "groups[1].queues: got ['video', 'video']; a queue may be listed once",
    ),
    (
        "soft >= hard",
        doc(video=VIDEO + "task_soft_time_limit = 300\n"),
        "groups[1].task_soft_time_limit: got 300; must be below task_time_limit (300)",
    ),
    (
        "handoff with prefetch",
        doc(video=VIDEO + 'restart = "handoff"\nprefetch_multiplier = 4\n'),
        'groups[1].prefetch_multiplier: got 4; restart = "handoff" needs 1: a worker handing off keeps what it '
        "holds until it ends, so a task prefetched behind a long one would wait for it on the old release",
    ),
    (
        "handoff with autoscale",
        doc(video=VIDEO + 'restart = "handoff"\nautoscale = [4, 1]\n'),
        'groups[1].autoscale: cannot be used with restart = "handoff": the prefetch follows the pool\'s maximum, '
        "so a worker handing off could hold tasks it has not started; set concurrency instead",
    ),
    (
        "bad restart",
        doc(video=VIDEO + 'restart = "rolling"\n'),
        "groups[1].restart: got 'rolling'; allowed: 'drain' or 'handoff'",
    ),
    (
        "handoff cap",
        doc(video=VIDEO + "handoff_max_draining = 0\n"),
        "groups[1].handoff_max_draining: got 0; allowed: a number >= 1",
    ),
    (
        "autoscale order",
        doc(video=VIDEO + "autoscale = [2, 4]\n"),
        "groups[1].autoscale: got [2, 4]; allowed: [max, min] with max >= 1 and min <= max",
    ),
    (
        "bad app name",
        doc(app=APP.replace('"acme"', '"Acme_Workers"')),
        "app.name: got 'Acme_Workers'; allowed: lowercase letters, digits and '-' (at most 63, starting "
        "with a letter or digit)",
    ),
    (
        "relative install_dir",
        doc(app=APP + 'install_dir = "opt/acme"\n'),
        "app.install_dir: got 'opt/acme'; allowed: an absolute path of letters, digits and _ . @ + - "
        "(no spaces, no trailing '/')",
    ),
    ("missing app", doc(app=""), "app: is required"),
    ("app not table", doc(app='app = "acme"\n'), "app: got 'acme'; allowed: a table"),
    ("no groups", doc(email="", video=""), "groups: is required"),
    (
        "bad backend",
        doc(targets='[targets.sandbox]\nbackend = "ecs"\n'),
        "targets.sandbox.backend: got 'ecs'; allowed: 'local', 'codedeploy'",
    ),
    (
        "bad role",
        doc(targets='[targets.prod]\nbackend = "codedeploy"\nservice_role_arn = "role"\n'),
        "targets.prod.service_role_arn: got 'role'; allowed: an IAM role ARN like "
        "'arn:aws:iam::123456789012:role/Name'",
    ),
    (
        "instances unknown group",
        doc(targets=TARGETS + "instances = { vidoe = 3 }\n"),
        "targets.sandbox.instances.vidoe: no group named 'vidoe'; groups are: email, video",
    ),
    (
        "bad target name",
        doc(targets=TARGETS.replace("sandbox", '"a\\nb"')),
        "targets.\"a\\nb\": got 'a\\nb' as a target name; allowed: letters, digits, '_', '.' and '-' (at most 100, "
        "starting with a letter or digit)",
    ),
    (
        "default target",
        doc(extra='default_target = "prod"\n'),
        "default_target: got 'prod'; allowed: one of the targets (sandbox)",
    ),
    (
        "bad bucket",
        doc(artifacts='[artifacts]\nbucket = "Acme_Artifacts"\n'),
        "artifacts.bucket: got 'Acme_Artifacts'; allowed: an S3 bucket name (3-63 lowercase letters, "
        "digits, '.' and '-')",
    ),
    (
        "bad region",
        doc(extra='[aws]\nregion = "useast1"\n'),
        "aws.region: got 'useast1'; allowed: an AWS region like 'us-east-1'",
    ),
    (
        "bad owner",
        doc(artifacts=ARTIFACTS + 'expected_bucket_owner = "12345"\n'),
        "artifacts.expected_bucket_owner: got '12345'; allowed: a 12-digit AWS account id",
    ),
    (
        "malformed",
        "[app\nname = 1\n",
        "malformed TOML: Expected ']' at the end of a table declaration (at line 1, column 5)",
    ),
    ("wave negative", doc(video=VIDEO + "wave = -1\n"), "groups[1].wave: got -1; allowed: a number >= 0"),
    # issue 9: fleets certain to fail, and typos inside a strategy table
    (
        "strategy table typo",
        doc(video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_host = 1 }")),
        "groups[1].strategy.min_healthy_host: unknown key (did you mean 'min_healthy_hosts'?); allowed: "
        "min_healthy_hosts, min_healthy_percent",
    ),
    (
        "defaults strategy typo",
        doc(defaults=DEFAULTS + "strategy = { min_healthy_procent = 10 }\n"),
        "defaults.strategy.min_healthy_procent: unknown key (did you mean 'min_healthy_percent'?); allowed: "
        "min_healthy_hosts, min_healthy_percent",
    ),
    (
        "min hosts = instances",
        doc(video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_hosts = 2 }")),
        "groups[1].strategy: min 2 hosts needs 2 healthy host(s), not below the 2 instance(s) of group 'video' "
        "on target 'sandbox' (targets.sandbox.instances_per_group): CodeDeploy fails every deployment of it at "
        "once; allowed: a minimum below 2, HalfAtATime or OneAtATime",
    ),
    (
        "min hosts > per-group count",
        doc(
            video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_hosts = 3 }"),
            targets=TARGETS + "instances_per_group = 5\ninstances = { video = 3 }\n",
        ),
        "groups[1].strategy: min 3 hosts needs 3 healthy host(s), not below the 3 instance(s) of group 'video' "
        "on target 'sandbox' (targets.sandbox.instances.video): CodeDeploy fails every deployment of it at "
        "once; allowed: a minimum below 3, HalfAtATime or OneAtATime",
    ),
    (
        "percent rounds up to the fleet",
        doc(video=VIDEO.replace('"HalfAtATime"', "{ min_healthy_percent = 51 }")),
        "groups[1].strategy: min 51% needs 2 healthy host(s), not below the 2 instance(s) of group 'video' "
        "on target 'sandbox' (targets.sandbox.instances_per_group): CodeDeploy fails every deployment of it at "
        "once; allowed: a minimum below 2, HalfAtATime or OneAtATime",
    ),
    (
        "min hosts from defaults",
        doc(defaults=DEFAULTS + "strategy = { min_healthy_hosts = 2 }\n"),
        "defaults.strategy: min 2 hosts needs 2 healthy host(s), not below the 2 instance(s) of group 'email' "
        "on target 'sandbox' (targets.sandbox.instances_per_group): CodeDeploy fails every deployment of it at "
        "once; allowed: a minimum below 2, HalfAtATime or OneAtATime",
    ),
    (
        "source missing",
        doc(app=APP + 'source = "nope"\n'),
        "app.source: got 'nope', which does not exist; allowed: the app's directory, relative to the fleet "
        "file's directory and inside it",
    ),
    (
        "source is a file",
        doc(app=APP + 'source = "deploy.toml"\n'),
        "app.source: got 'deploy.toml', which is not a directory; allowed: the app's directory, relative to "
        "the fleet file's directory and inside it",
    ),
    (
        "source outside",
        doc(app=APP + 'source = "../app"\n'),
        "app.source: got '../app', which is outside the fleet file's directory {dir}; allowed: the app's "
        "directory, relative to the fleet file's directory and inside it",
    ),
    (
        "agent version not a version",
        doc(app=APP + 'codedeploy_agent = "latest"\n'),
        "app.codedeploy_agent: got 'latest'; allowed: the version of the oldest CodeDeploy agent on the fleet, "
        "like '1.7.1' or '2.1'",
    ),
    (
        "agent version a number",
        doc(app=APP + "codedeploy_agent = 2.1\n"),
        "app.codedeploy_agent: got 2.1; allowed: a string",
    ),
    (
        "source absolute outside",
        doc(app=APP + 'source = "/usr"\n'),
        "app.source: got '/usr', which is outside the fleet file's directory {dir}; allowed: the app's "
        "directory, relative to the fleet file's directory and inside it",
    ),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_fleet_files_fail_with_one_exact_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    (tmp_path.parent / "app").mkdir(exist_ok=True)  # exists, but outside the fleet file's directory
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert str(caught.value) == f"{path}: {message.replace('{dir}', str(tmp_path.resolve()))}"
    assert "\n" not in str(caught.value)


def test_drain_shorter_than_time_limit_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, doc(video=VIDEO + "drain_timeout = 120\n"))
    fleet = load_fleet(path)
    assert fleet.warnings == (
        f"{path}: groups[1].drain_timeout: 120 s is shorter than task_time_limit 300 s (video): "
        "tasks running longer than the drain are interrupted and re-run",
    )


def test_with_the_visibility_heartbeat_a_long_task_group_may_have_a_short_visibility_timeout(tmp_path: Path) -> None:
    text = doc(video=VIDEO + "task_time_limit = 3000\nvisibility_heartbeat = true\nvisibility_timeout = 30\n")
    video = load_fleet(write(tmp_path, text)).group("video")
    assert (video.visibility_timeout, video.visibility_heartbeat_step, video.min_visibility_timeout) == (30, 10, 21)
    shipped = video.worker_settings()
    assert shipped["visibility_heartbeat"] is True and shipped["visibility_heartbeat_step"] == 10
    # Without the heartbeat the same group needs the task's length and more.
    with pytest.raises(ConfigError, match="must exceed task_time_limit"):
        load_fleet(write(tmp_path, doc(video=VIDEO + "task_time_limit = 3000\nvisibility_timeout = 30\n")))


def test_defaults_fill_what_a_group_leaves_out(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, doc(defaults=DEFAULTS + "concurrency = 6\n", video=VIDEO + "concurrency = 1\n")))
    assert fleet.group("email").concurrency == 6
    assert fleet.group("video").concurrency == 1
    assert fleet.group("email").visibility_timeout == 1800


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_fleet(tmp_path / "nope.toml")
    missing = tmp_path / "nope.toml"
    assert str(caught.value) == f"{missing}: fleet file not found (pass --fleet PATH or create deploy.toml)"
    with pytest.raises(ConfigError) as caught:
        load_fleet(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory, not a fleet file"


def test_sample_fleet_is_valid(sample_fleet_path: Path) -> None:
    fleet = load_fleet(sample_fleet_path)
    assert [g.name for g in fleet.groups] == ["email", "reports", "video"]
    assert fleet.group("reports").strategy == Strategy("FleetPercent", 50)
    assert fleet.warnings == ()


ROOT_ALLOWED = (
    "allowed: a relative path inside the fleet file's directory, not that directory itself (e.g. "
    "'.sandbox'; the sandbox deletes and re-creates its subdirectories)"
)


@pytest.mark.parametrize(
    "root", [".", "./", "..", "/", "~", "~/sandbox", "/tmp/x", "a/../..", "a/..", "", "sb\0x", "sb\nx"]
)
def test_a_sandbox_root_outside_or_at_the_fleet_directory_is_refused(tmp_path: Path, root: str) -> None:
    """The sandbox deletes subdirectories of its root: a root that is the clone itself or elsewhere is an error."""
    text = doc(targets=TARGETS + f"root = {json.dumps(root)}\n")
    with pytest.raises(ConfigError) as caught:
        load_fleet(write(tmp_path, text))
    assert str(caught.value) == f"{tmp_path / 'deploy.toml'}: targets.sandbox.root: got {root!r}; {ROOT_ALLOWED}"


@pytest.mark.parametrize("link", ["outside", "here"])
def test_a_sandbox_root_leading_outside_through_a_symlink_is_refused(tmp_path: Path, link: str) -> None:
    fleet_dir, outside = tmp_path / "repo", tmp_path / "elsewhere"
    fleet_dir.mkdir()
    outside.mkdir()
    (fleet_dir / "sb").symlink_to(outside if link == "outside" else fleet_dir)
    path = write(fleet_dir, doc(targets=TARGETS + 'root = "sb"\n'))
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    leads_to = outside if link == "outside" else fleet_dir
    assert str(caught.value) == f"{path}: targets.sandbox.root: got 'sb', but it leads to {leads_to}; {ROOT_ALLOWED}"


def test_a_sandbox_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, doc(targets=TARGETS + 'root = "deploy.toml"\n'))
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert str(caught.value) == (
        f"{path}: targets.sandbox.root: got 'deploy.toml', which is a file, not a directory; {ROOT_ALLOWED}"
    )


@pytest.mark.parametrize("root", [".sandbox", "build/sandbox", "sb-link"])
def test_a_sandbox_root_inside_the_fleet_directory_is_fine(tmp_path: Path, root: str) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "sb-link").symlink_to(tmp_path / "real")  # a symlink that stays inside is fine
    fleet = load_fleet(write(tmp_path, doc(targets=TARGETS + f'root = "{root}"\n')))
    assert fleet.targets["sandbox"].root == root  # type: ignore[union-attr]


def test_unusual_keys_are_quoted_so_the_error_stays_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, doc(targets=TARGETS + '"a\\nb" = 1\n'))
    with pytest.raises(ConfigError) as caught:
        load_fleet(path)
    assert (
        str(caught.value) == f'{path}: targets.sandbox."a\\nb": unknown key; allowed: backend, '
        "instances_per_group, instances, broker, root"
    )


def test_a_source_is_judged_as_written_so_a_linked_in_app_is_fine(tmp_path: Path) -> None:
    """Inside the fleet file's directory as written: a symlink there may lead to the app elsewhere."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "linked").symlink_to(tmp_path / "elsewhere")
    fleet = load_fleet(write(tmp_path / "repo", doc(app=APP + 'source = "linked"\n')))
    assert fleet.source_dir == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("agent", "restart_mode"),
    [
        (None, False),
        ("1.7", False),
        ("1.7.1", False),
        ("2", False),
        ("2.0.99", False),
        ("2.1", True),
        ("2.1.0", True),
        ("2.10", True),
        ("3", True),
    ],
)
def test_restart_mode_needs_a_declared_agent_2_1_or_newer(
    tmp_path: Path, agent: str | None, restart_mode: bool
) -> None:
    line = f'codedeploy_agent = "{agent}"\n' if agent else ""
    fleet = load_fleet(write(tmp_path, doc(app=APP + line)))
    assert fleet.app.codedeploy_agent == agent and fleet.app.restart_mode is restart_mode


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (
            None,
            "fab restart: redeploys each group's last successful revision (app.codedeploy_agent not set; "
            "deploymentMode RESTART needs CodeDeploy agent 2.1.0+ on every instance)",
        ),
        ("2.1.0", "fab restart: deploymentMode RESTART (app.codedeploy_agent = '2.1.0': agents 2.1.0+)"),
    ],
)
def test_fab_check_says_what_restart_sends(
    tmp_path: Path, agent: str | None, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "deploy.toml").read_text()  # the sample: a codedeploy target
    if agent:
        text = text.replace("[app]\n", f'[app]\ncodedeploy_agent = "{agent}"\n', 1)
    (tmp_path / "deploy.toml").write_text(text)
    shutil.copytree(ROOT / "sample_app", tmp_path / "sample_app")
    config_tasks.check(Context(), fleet=str(tmp_path / "deploy.toml"))
    assert expected in capsys.readouterr().out.splitlines()


def test_rollout_partial_failure_defaults_to_rollback_and_may_keep(tmp_path: Path) -> None:
    assert load_fleet(write(tmp_path, doc())).rollout.partial_failure == "rollback"
    kept = load_fleet(write(tmp_path, doc(extra='[rollout]\npartial_failure = "keep"\n')))
    assert kept.rollout.partial_failure == "keep"
