"""The task contract of a release: the Celery task names its app registers, and what each one requires.

A worker of a new release rejects a message for a task it does not register (celery: "Received unregistered
task"), and one for a task whose new version requires an argument old messages lack fails at once. Messages
already queued, and those the old release's producers still send during a rollout, are for the old names.
So `fab deploy` compares the new release's contract with the last release that succeeded on the target
(deploytool.rollout.release) and refuses a removed task, or one that now requires more, unless
`--allow-task-changes`.

Contract:
- `registered_tasks(files)`: read without importing (the build machine need not have the app's
  dependencies) from the bundle's .py files `(relative path, text)`: every function decorated with
  `@<anything>.task`, `@task`, `@shared_task` (called or not). Its name is the decorator's `name=` when that is
  a string literal, else Celery's default `<module>.<function>` with the module from the file's path (a
  package's `__init__.py` is the package). Its required parameters are the positional ones without a default
  (the first dropped with `bind=True`). Best effort: tasks registered another way (app.register_task, a class
  based task, a name built at run time) are not seen, and are then never reported as removed.
- `changes(old, new)`: one line per task of `old` that `new` drops, or requires more positional arguments of
  (messages carry them by position); empty: compatible.
A file that does not parse is skipped (the worker would fail on it anyway; validation catches that).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping

DECORATORS = ("task", "shared_task")


def _decorator(node: ast.expr) -> tuple[bool, ast.Call | None]:
    """Whether `node` is a task decorator, and its call when it is called (`@app.task(...)`)."""
    call = node if isinstance(node, ast.Call) else None
    target = call.func if call is not None else node
    if isinstance(target, ast.Attribute):
        return target.attr == "task", call
    if isinstance(target, ast.Name):
        return target.id in DECORATORS, call
    return False, None


def _keyword(call: ast.Call | None, name: str) -> ast.expr | None:
    for keyword in call.keywords if call is not None else ():
        if keyword.arg == name:
            return keyword.value
    return None


def module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def registered_tasks(files: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path, text in files:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                is_task, call = _decorator(decorator)
                if not is_task:
                    continue
                named = _keyword(call, "name")
                name = named.value if isinstance(named, ast.Constant) and isinstance(named.value, str) else None
                bound = _keyword(call, "bind")
                positional = [a.arg for a in node.args.posonlyargs + node.args.args]
                if isinstance(bound, ast.Constant) and bound.value is True:
                    positional = positional[1:]
                required = positional[: len(positional) - len(node.args.defaults)]
                found[name or f"{module_name(path)}.{node.name}"] = required
                break
    return dict(sorted(found.items()))


def changes(old: Mapping[str, list[str]], new: Mapping[str, list[str]]) -> list[str]:
    lines = []
    for name, required in sorted(old.items()):
        if name not in new:
            lines.append(f"{name}: no longer registered")
            continue
        if len(new[name]) > len(required):  # messages carry arguments by position: a longer list is what breaks
            more = ", ".join(new[name][len(required) :])
            lines.append(f"{name}: now requires {len(new[name])} argument(s), was {len(required)} (new: {more})")
    return lines
