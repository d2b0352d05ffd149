"""Which files stay out of a bundle: gitignore-style patterns.

Contract: `IgnoreRules(patterns).ignored(relpath, is_dir)` says whether a path (relative to the app
source root, '/'-separated) is excluded. The rules are a subset of gitignore's, enough for a
`.deployignore`: blank lines and `#` comments are skipped; `!pattern` re-includes; a trailing `/`
matches directories only; a pattern with a `/` elsewhere is anchored at the root, one without
matches a name at any depth; `*` and `?` stay inside one path part, `**` crosses parts, `[abc]` is a
class. The last matching pattern wins. A walker that does not descend into an excluded directory gets
git's rule that nothing inside it can be re-included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from deploytool.errors import BundleError

# Never shipped: VCS data, bytecode, local environment files and private keys.
DEFAULT_EXCLUDES = (".git", "__pycache__", "*.pyc", ".env*", "*.pem")
DEPLOYIGNORE = ".deployignore"


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def _glob_to_regex(glob: str) -> str:
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and (end := glob.find("]", i + 2)) != -1:
            body = glob[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif glob[i] == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


def _compile(line: str, origin: str) -> _Rule | None:
    pattern = line.rstrip()
    if not pattern or pattern.startswith("#"):
        return None
    negate = pattern.startswith("!")
    pattern = pattern[1:] if negate else pattern
    dir_only = pattern.endswith("/")
    pattern = pattern.rstrip("/")
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    if not pattern:
        raise BundleError(f"{origin}: pattern {line.strip()!r} matches nothing")
    body = _glob_to_regex(pattern)
    try:
        regex = re.compile(body if anchored else f"(?:.*/)?{body}")
    except re.error as exc:
        raise BundleError(f"{origin}: bad pattern {line.strip()!r}: {exc}") from exc
    return _Rule(regex, negate, dir_only)


class IgnoreRules:
    def __init__(self, patterns: Iterable[str] = DEFAULT_EXCLUDES, *, origin: str = "excludes") -> None:
        self._rules = [
            rule
            for number, line in enumerate(patterns, start=1)
            if (rule := _compile(line, f"{origin}:{number}")) is not None
        ]

    def extended(self, patterns: Iterable[str], *, origin: str) -> IgnoreRules:
        """These rules followed by more (which win where both match)."""
        more = IgnoreRules(patterns, origin=origin)
        combined = IgnoreRules(())
        combined._rules = [*self._rules, *more._rules]
        return combined

    def with_deployignore(self, root: Path) -> IgnoreRules:
        """These rules plus the patterns of `root/.deployignore`, when there is one."""
        file = root / DEPLOYIGNORE
        if not file.is_file():
            return self
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"{file}: cannot read: {exc}") from exc
        return self.extended(lines, origin=str(file))

    def ignored(self, relpath: str, is_dir: bool) -> bool:
        verdict = False
        for rule in self._rules:
            if (is_dir or not rule.dir_only) and rule.regex.fullmatch(relpath):
                verdict = not rule.negate
        return verdict
