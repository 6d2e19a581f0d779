"""Compose-file variable interpolation, as the Compose specification defines it, for offline checks.

`docker compose config` needs the compose plugin; where it is missing the tests still need the file
as Compose would see it. Supported forms: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e},
${VAR:+a}, ${VAR+a} (not nested).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def variables_used(value: Any) -> dict[str, str | None]:
    """Every variable the document refers to, mapped to its `:-`/`-` default (None when it has none)."""
    found: dict[str, str | None] = {}
    for text in _strings(value):
        for m in _PATTERN.finditer(text):
            name = m.group("braced") or m.group("named")
            if name is None:
                continue
            default = m.group("arg") if m.group("op") in (":-", "-") else None
            if found.get(name) is None:
                found[name] = default
    return found


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """A copy of a loaded YAML document with every string interpolated from `env`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):
        return _PATTERN.sub(lambda m: _substitute(m, env), value)
    return value


def _substitute(m: re.Match, env: Mapping[str, str]) -> str:
    if m.group("escaped"):
        return "$"
    name = m.group("braced") or m.group("named")
    op, arg = m.group("op"), m.group("arg") or ""
    value = env.get(name)
    unset_or_empty = not value
    if op == ":-":
        return arg if unset_or_empty else value
    if op == "-":
        return arg if value is None else value
    if op == ":?":
        if unset_or_empty:
            raise InterpolationError(f"{name}: {arg}")
        return value
    if op == "?":
        if value is None:
            raise InterpolationError(f"{name}: {arg}")
        return value
    if op == ":+":
        return "" if unset_or_empty else arg
    if op == "+":
        return "" if value is None else arg
    if value is None:
        raise InterpolationError(f"variable {name} is not set and has no default")
    return value


def _strings(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value
