"""One-line ConfigError messages for the fleet file, and the table checks that raise them.

Contract: every error names the key path (`key_path`: ``groups[3].strategy``, ``targets."a b".root``), the
value and what is allowed. `check_keys` refuses an unknown key with a did-you-mean; `validate` runs a model
and turns pydantic's first error into that line (`_describe`), naming [defaults] when a group inherited the
value from there. No I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from deploytool.config.models import PATTERN_WORDS, Model
from deploytool.errors import ConfigError


def key_path(loc: Sequence[str | int]) -> str:
    """('groups', 3, 'strategy') -> 'groups[3].strategy'. A key that is not a bare TOML key (letters,
    digits, '_' and '-') is quoted as TOML does, so the path stays on one line: targets."a b".root."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part) if re.fullmatch(r"[A-Za-z0-9_-]+", str(part)) else _quoted(str(part))
            out += f".{text}" if out else text
    return out


def _quoted(key: str) -> str:
    """A TOML quoted key; what is not printable (line breaks too) as a \\u or \\U escape."""
    out = ""
    for char in key:
        if char in '"\\':
            out += "\\" + char
        elif char in "\n\t\r":
            out += {"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char]
        elif char.isprintable():
            out += char
        else:
            out += f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
    return f'"{out}"'


def _unknown_key_error(path: str, where: str, key: str, allowed: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    full = f"{where}.{key_path([key])}" if where else key_path([key])
    return ConfigError(f"unknown key{hint}; allowed: {', '.join(allowed)}", path=path, key=full)


def check_keys(path: str, where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            raise _unknown_key_error(path, where, key, allowed)


def field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


_TYPE_WORDS = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
}


def _describe(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind in _TYPE_WORDS:
        return f"got {value!r}; allowed: {_TYPE_WORDS[kind]}"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return f"got {value!r}; allowed: {PATTERN_WORDS.get(pattern, 'text matching ' + pattern)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = {
            "greater_than_equal": ">=",
            "less_than_equal": "<=",
            "greater_than": ">",
            "less_than": "<",
        }[kind]
        limit = next(iter(ctx.values()), "?")
        return f"got {value!r}; allowed: a number {bound} {limit}"
    if kind == "too_short":
        return f"got {value!r}; allowed: at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"got {value!r}; allowed: at most {ctx.get('max_length')} item(s)"
    if kind == "literal_error":
        return f"got {value!r}; allowed: {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"got {value!r}; {error['msg']}"


def validate(
    model: type[Model], data: Mapping[str, Any], path: str, where: Sequence[str | int], origin: Any = None
) -> Any:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        if origin is not None and loc and isinstance(loc[0], str):
            where = origin(loc[0])
        raise ConfigError(_describe(first), path=path, key=key_path([*where, *loc])) from exc


def require_table(path: str, key: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"got {value!r}; allowed: a table", path=path, key=key)
    return value


def validate_table(model: type[Model], path: str, key: str, value: object) -> Any:
    """A top-level table: unknown keys (with a did-you-mean) first, then the model's rules."""
    table = require_table(path, key, value)
    check_keys(path, key, table, field_names(model))
    return validate(model, table, path, [key])
