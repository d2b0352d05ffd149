"""Property: whatever a user types after `fab`, a command line with at least one bad part (an option value
outside what the option allows, an unknown option, an unknown task) is refused with exit 2 and ONE line on
stderr naming a bad option (or the unknown task), never a traceback, before anything runs.

fab runs in this process (fabric's own Program, on a copy of the repository) for speed; a few examples also
run the real `fab` as a subprocess. No sandbox runs in the copy and AWS points at a closed loopback port with
fake credentials, so a check that came too late could not reach anything real: it would show up as a
different error or a success, and fail the property.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from fabric.main import make_program
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploytool.rollout.backend import LIFECYCLE_EVENTS
from deploytool.version import VERSION_PATTERN
from tests.fab_repo import copy_repo, fab

pytestmark = pytest.mark.slow

EXAMPLES = 1000
GROUPS = ("email", "reports", "video")
TARGETS = ("sandbox", "production")
OFFLINE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "DEPLOYTOOL_AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}

# --- values: odd ones, and what each option allows -------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)
ODD = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "  ",
            ",",
            " , ",
            ",,",
            "-1",
            "-",
            "--",
            "0",
            "x",
            "é",
            "中文",
            "\t",
            "a\nb",
            "1e3",
            "../..",
            "/",
            "~",
        ]
    ),
    st.sampled_from([300, 5000]).map(lambda n: "x" * n),  # too long for a file name; more digits than int() takes
    st.sampled_from([300, 5000]).map(lambda n: "9" * n),
    TEXT,
    st.text(alphabet=" ,-_.éx9\u2028", max_size=12),
)


def missing(value: str) -> bool:
    try:
        return not value.strip() or not Path(value).exists()
    except OSError:  # a name too long to look up
        return True


def whole(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def outside(allowed: tuple[str, ...]):  # type: ignore[no-untyped-def]
    return ODD.filter(lambda v: v not in allowed)


def names_outside(allowed: tuple[str, ...], *, one: bool = False):  # type: ignore[no-untyped-def]
    def bad(value: str) -> bool:
        names = [p.strip() for p in value.split(",") if p.strip()]
        return not names or any(n not in allowed for n in names) or (one and len(names) != 1)

    return ODD.filter(bad)


def int_outside(low: int, high: int | None):  # type: ignore[no-untyped-def]
    def bad(value: str) -> bool:
        number = whole(value)
        return number is None or number < low or (high is not None and number > high)

    return st.one_of(
        ODD,
        st.integers(max_value=low - 1).map(str),
        *([st.integers(min_value=high + 1).map(str)] if high is not None else []),
    ).filter(bad)


def unmatched(pattern: str):  # type: ignore[no-untyped-def]
    return ODD.filter(lambda v: not re.fullmatch(pattern, v) or ".." in v)


@dataclass(frozen=True)
class Option:
    good: st.SearchStrategy[str] | None  # None: a flag (no value)
    bad: st.SearchStrategy[str] | None = None
    required: bool = False


def flag() -> Option:
    return Option(None)


VERSION = Option(st.sampled_from(["1.0", "2024.05.06-abc1234"]), unmatched(VERSION_PATTERN[1:-1]))
MISSING = "/nonexistent-deploytool-dir/x"


def options_for(tmp: Path, afile: Path) -> dict[str, dict[str, Option]]:
    fleet = Option(st.just("deploy.toml"), ODD.filter(missing))
    target = Option(st.sampled_from(TARGETS), outside(TARGETS))
    local_only = Option(st.just("sandbox"), outside(("sandbox",)))
    groups = Option(st.lists(st.sampled_from(GROUPS), min_size=1, unique=True).map(",".join), names_outside(GROUPS))
    rollout = {
        "fleet": fleet,
        "target": target,
        "groups": groups,
        "ci": flag(),
        "dry-run": flag(),
        "max-parallel": Option(st.integers(0, 50).map(str), int_outside(0, None)),
        "on-failure": Option(st.sampled_from(["stop-wave", "stop-all"]), outside(("stop-wave", "stop-all"))),
        "json-out": Option(
            st.just(str(tmp / "result.json")),
            st.sampled_from(["", " ", f"{MISSING}.json", "/proc/x.json", str(tmp), "j" * 300]),
        ),
    }
    build = {
        "fleet": fleet,
        "version": VERSION,
        "allow-dirty": flag(),
        "out": Option(st.just(str(tmp / "out")), st.sampled_from(["", " ", "/proc/x", f"{afile}/x", str(afile)])),
    }
    athena = {
        "database": Option(st.just("deploytool"), unmatched(r"[a-z0-9_]{1,255}")),
        "workgroup": Option(st.just("primary"), unmatched(r"[A-Za-z0-9._-]{1,128}")),
    }
    return {
        "check": {"fleet": fleet},
        "build": build,
        "publish": {
            **build,
            "target": Option(st.just("production"), outside(TARGETS)),
            "endpoint-url": Option(
                st.just("http://127.0.0.1:9"), ODD.filter(lambda v: not v.startswith(("http://", "https://")))
            ),
        },
        "reconcile": {
            "fleet": fleet,
            "target": target,
            "groups": groups,
            "json": flag(),
            "fix": flag(),
            "ci": flag(),
            "engine": Option(st.sampled_from(["athena", "duckdb"]), outside(("athena", "duckdb"))),
            "days": Option(st.integers(1, 366).map(str), int_outside(1, 366)),
            "release": Option(st.just("20240506T083000Z-2024.05.06-bbbbbbb"), unmatched(r"\d{8}T\d{6}Z-.+")),
            "no-snapshot": flag(),
            **athena,
        },
        "athena-ddl": {"fleet": fleet, "apply": flag(), **athena},
        "setup": {"fleet": fleet, "target": Option(st.just("production"), outside(("production",))), "dry-run": flag()},
        "doctor": {
            "fleet": fleet,
            "target": Option(st.just("production"), outside(("production",))),
            "json": flag(),
            "read-only": flag(),
            "database": athena["database"],
        },
        "deploy": {
            **rollout,
            "version": VERSION,
            "allow-dirty": flag(),
            "no-reconcile": flag(),
            "reconcile-engine": Option(st.sampled_from(["athena", "duckdb"]), outside(("athena", "duckdb"))),
        },
        "rollback": {**rollout, "to": VERSION},
        "restart": rollout,
        "status": {
            "fleet": fleet,
            "target": target,
            "ci": flag(),
            "release": Option(st.just("20240506T083000Z-2024.05.06-bbbbbbb"), unmatched(r"\d{8}T\d{6}Z-.+")),
        },
        "sandbox-up": {"fleet": fleet, "target": local_only},
        "sandbox-down": {"fleet": fleet, "target": local_only},
        "hooks": {
            "fleet": fleet,
            "target": local_only,
            "event": Option(st.sampled_from(LIFECYCLE_EVENTS[-2:]), names_outside(LIFECYCLE_EVENTS), required=True),
            "group": Option(st.sampled_from(GROUPS), names_outside(GROUPS, one=True)),
            "instance": Option(st.just("i-0123456789abcdef0"), st.sampled_from(["", " ", "\t"])),
            "bundle": Option(None, ODD.filter(missing)),
            "file-exists-behavior": Option(
                st.sampled_from(["DISALLOW", "OVERWRITE", "RETAIN"]), outside(("DISALLOW", "OVERWRITE", "RETAIN"))
            ),
        },
        "sandbox": {"fleet": fleet, "target": local_only, "groups": groups, "ci": flag()},
        "grafana-dashboard": {},
    }


@dataclass(frozen=True)
class Case:
    argv: list[str]
    named: tuple[str, ...]  # the line must contain one of these


@st.composite
def cases(draw: st.DrawFn, table: dict[str, dict[str, Option]]) -> Case:
    """A task, its options each left out, good or bad (flags on or off), then maybe an unknown option or task;
    at least one part is bad. Parts are whole (an option with its value), so an unknown option never lands
    between an option and its value."""
    task = draw(st.sampled_from(sorted(table)))
    parts: list[list[str]] = []
    named: list[str] = []
    for name, option in table[task].items():
        if option.good is None and option.bad is None:  # a flag
            if draw(st.booleans()):
                parts.append([f"--{name}"])
            continue
        choices = ["good", "bad"] if option.required else ["omit", "good", "bad"]
        how = draw(st.sampled_from([c for c in choices if c != "good" or option.good is not None]))
        source = option.good if how == "good" else option.bad if how == "bad" else None
        if source is None:
            continue
        parts.append([f"--{name}", draw(source)])
        if how == "bad":
            named.append(name)
    extra = draw(
        st.sampled_from(["none", "option", "task", "task-instead"] if named else ["option", "task", "task-instead"])
    )
    if extra == "option":
        unknown = draw(
            st.one_of(
                st.from_regex(r"--zz[a-z-]{0,12}", fullmatch=True),
                st.sampled_from([f"--{n}x" for n in table[task]] or ["--x"]),
            )
        )
        parts.insert(draw(st.integers(0, len(parts))), [unknown])
        named.append(unknown)
    elif extra == "task":
        parts.append([draw(st.from_regex(r"zz[a-z0-9_-]{0,10}", fullmatch=True))])
        named.append("unknown task")
    elif extra == "task-instead":
        task = draw(st.sampled_from([task + "s", task.replace("-", "_") + "x", "deplyo", "reconcil"]))
        named.append("unknown task")
    return Case([task, *(token for part in parts for token in part)], tuple(named))


# --- running fab in this process -----------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    copy = copy_repo(tmp_path_factory.mktemp("repo"))
    saved = dict(os.environ)
    cwd = Path.cwd()
    os.environ.update(OFFLINE_AWS)
    for key in ("AWS_PROFILE", "CI", "DEPLOYTOOL_FLEET", "GITHUB_STEP_SUMMARY"):
        os.environ.pop(key, None)
    os.chdir(copy)
    try:
        yield copy
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Option]]:
    tmp = tmp_path_factory.mktemp("values")
    afile = tmp / "afile"
    afile.write_text("not a directory\n")
    return options_for(tmp, afile)


def run_in_process(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code: int = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            make_program().run(["fab", *argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()


def assert_refused(case: Case, code: int, stderr: str) -> None:
    assert "Traceback" not in stderr, (case.argv, stderr)
    assert code == 2, (case.argv, code, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and stderr.endswith("\n") and stderr.count("\n") == 1, (case.argv, stderr)
    line = lines[0]
    assert line.startswith("error: "), (case.argv, line)
    shown = [n if n == "unknown task" else repr(n)[1:-1][:60] if n.startswith("--") else n for n in case.named]
    assert any(n in line for n in shown), (case.argv, case.named, line)


PROPERTY = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@PROPERTY
@given(data=st.data())
def test_every_bad_command_line_is_one_line_and_exit_2(
    repo: Path, table: dict[str, dict[str, Option]], data: st.DataObject
) -> None:
    case = data.draw(cases(table), label="case")
    code, stderr = run_in_process(case.argv)
    assert_refused(case, code, stderr)
    assert not (repo / ".sandbox").exists() and not (repo / "dist").exists()


@settings(PROPERTY, max_examples=12)
@given(data=st.data())
def test_the_real_fab_agrees_on_a_few_generated_command_lines(
    repo: Path, table: dict[str, dict[str, Option]], data: st.DataObject
) -> None:
    case = data.draw(cases(table), label="case")
    done = fab(repo, *case.argv, env=OFFLINE_AWS)
    assert_refused(case, done.returncode, done.stderr)
