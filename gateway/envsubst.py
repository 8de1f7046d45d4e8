"""``${VAR}`` and ``${VAR:-default}`` in configuration values, replaced from the environment.

A default may itself hold references (``${PUBLIC_URL:-http://127.0.0.1:${PORT:-8080}}``). A value
taken from the environment is used as it is, never expanded again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The start of a reference: ``${NAME}`` or ``${NAME:-default}``.
_VAR_START = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-|\})")


class EnvReferenceError(ValueError):
    """A reference that cannot be replaced; ``path`` is the key path of the value."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class Substituted(str):
    """A string that came (partly) from the environment: may still be read as a number."""


def substitute(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """``value`` (a parsed YAML document) with every reference in its strings replaced."""
    if isinstance(value, dict):
        return {k: substitute(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    expanded, _ = _expand(value, 0, path, env, closing=False, strict=True)
    return Substituted(expanded)


def _expand(
    text: str, at: int, path: str, env: Mapping[str, str], *, closing: bool, strict: bool
) -> tuple[str, int]:
    """Expand references in ``text`` from ``at`` on; inside a default (``closing``), stop at its
    closing brace. A missing variable is an error only where its value is used (``strict``).
    Values from the environment are taken as they are, never expanded again."""
    out: list[str] = []
    while at < len(text):
        if closing and text[at] == "}":
            return "".join(out), at + 1
        found = _VAR_START.match(text, at) if text.startswith("${", at) else None
        if found is None:
            out.append(text[at])
            at += 1
            continue
        name = found.group(1)
        default: str | None = None
        at = found.end()
        if found.group(2) == ":-":
            used = strict and not env.get(name)
            default, at = _expand(text, at, path, env, closing=True, strict=used)
        if env.get(name):
            out.append(env[name])
        elif default is not None:
            out.append(default)
        elif strict:
            raise EnvReferenceError(path, f"environment variable {name} is not set")
    if closing:
        raise EnvReferenceError(path, "a ${...:-default} is not closed with }")
    return "".join(out), at
