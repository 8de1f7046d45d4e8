"""One table of error codes (``gateway.error_codes``): every error class lives in
``gateway.errors``, every code raised, rendered or documented is in the table with its status and
body keys, and the client reads the same table."""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.error_codes import CODES, Code
from gateway.errors import GatewayError
from gateway.server.http.openapi import document

from .helpers import Gateway

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"


def every_subclass(cls: type[GatewayError]) -> Iterator[type[GatewayError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from every_subclass(sub)


def sources() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


SOURCES = sources()
ERROR_CLASSES = {cls.__name__: cls for cls in every_subclass(GatewayError)}


def test_the_table_has_a_row_for_every_code() -> None:
    assert set(CODES) == set(Code)
    for code, entry in CODES.items():
        assert 400 <= entry.status < 500, code
        assert entry.keys[:2] == ("error", "code"), code


@pytest.mark.parametrize("path", sorted(SOURCES), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_error_class_is_defined_in_the_error_module(path: Path) -> None:
    if path == PACKAGE / "errors.py":
        return
    for node in ast.walk(SOURCES[path]):
        if isinstance(node, ast.ClassDef):
            assert node.name not in ERROR_CLASSES, f"{node.name}: define it in gateway/errors.py"


def test_the_error_module_defines_the_classes_found() -> None:
    # Guards the guard above: the server's errors are found, and all are in gateway.errors.
    assert {"ObjectNotFound", "WriteConflict", "DeploymentNotFound", "TooManyEvents"} <= set(
        ERROR_CLASSES
    )
    assert {cls.__module__ for cls in ERROR_CLASSES.values()} == {"gateway.errors"}


def code_of(value: ast.expr, where: str) -> Code:
    """The table's code a ``code=`` names; fails for a string or anything not in the table."""
    assert isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name), where
    assert value.value.id == "Code", f"{where}: name the code as Code.<NAME>"
    assert value.attr in Code.__members__, f"{where}: Code.{value.attr} is not in the table"
    return Code[value.attr]


def raised_codes() -> list[tuple[str, type[GatewayError], Code]]:
    """Every error built with a ``code=``, in the package: (where, class, code)."""
    found = []
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            cls = ERROR_CLASSES.get(str(name)) or (GatewayError if name == "GatewayError" else None)
            for keyword in node.keywords:
                if cls is not None and keyword.arg == "code":
                    where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
                    found.append((where, cls, code_of(keyword.value, where)))
    return found


def test_a_code_raised_is_in_the_table_with_its_status() -> None:
    found = raised_codes()
    assert len(found) > 10, "the scan sees the raise sites"  # guards the rule
    for where, cls, code in found:
        assert cls.status == CODES[code].status, f"{where}: {cls.__name__} {code}"


def test_a_code_declared_by_a_class_is_in_the_table_with_its_status() -> None:
    for cls in ERROR_CLASSES.values():
        if cls.code is not None:
            assert isinstance(cls.code, Code), cls
            assert cls.status == CODES[cls.code].status, cls


def test_a_string_is_never_a_code() -> None:
    """``code = "..."`` in a class or a ``{"code": "..."}`` body: codes come from the table."""
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name | ast.Attribute | ast.Subscript) and _is_code(t)
                for t in node.targets
            ):
                assert not _is_string(node.value), where
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "code":
                        assert not _is_string(value), where


def _is_string(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _is_code(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return target.id == "code"
    if isinstance(target, ast.Attribute):
        return target.attr == "code"
    return isinstance(target, ast.Subscript) and getattr(target.slice, "value", None) == "code"


def examples() -> list[GatewayError]:
    """An error of every class that declares a code, built as its raise sites build it."""
    built: list[GatewayError] = []
    for cls in ERROR_CLASSES.values():
        if cls.code is None or "code" not in vars(cls):
            continue
        params = inspect.signature(cls).parameters
        args: dict[str, Any] = {
            "message": "m",
            "offset": 3,
            "provided": 1,
            "reason": "r",
            "retry_after": 1,
            "policy": "p",
            "state": "s",
        }
        built.append(cls(**{k: v for k, v in args.items() if k in params}))
    return built


def test_every_body_has_its_codes_keys() -> None:
    built = examples()
    keyword = [cls(message="m", code=code) for _, cls, code in raised_codes()]
    seen = set()
    for error in [*built, *keyword]:
        assert error.code is not None
        assert tuple(error.body()) == CODES[error.code].keys, type(error)
        seen.add(error.code)
    # Every code of the table is raised somewhere (the middleware renders bad_request and
    # forbidden for aiohttp's own 400 and 403 too).
    assert seen == set(Code)


def test_the_api_reference_lists_the_table() -> None:
    text = (PACKAGE.parent / "docs" / "api.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \| ", text, re.M)
    assert rows == [(str(code), str(entry.status)) for code, entry in CODES.items()]


def test_openapi_names_every_code_under_its_status(gateway: Gateway) -> None:
    doc = document(gateway.config)
    named = set()
    for item in doc["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                for code in re.findall(r"`code: ([a-z_]+)`", response.get("description", "")):
                    assert code in CODES, f"{operation['operationId']} {status}: {code}"
                    assert CODES[Code(code)].status == int(status), operation["operationId"]
                    named.add(code)
    assert named == set(Code)
    error = doc["components"]["schemas"]["Error"]["properties"]["code"]
    assert error["enum"] == [str(code) for code in CODES]
