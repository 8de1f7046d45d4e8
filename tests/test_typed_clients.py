"""The S3 and SQS clients are typed with the stubs of aiobotocore (types-aiobotocore, s3 and sqs),
so that ``mypy --strict`` (``make lint``) checks every call; these checks keep it so: no client
handed around as ``Any``, the stubs pinned in the dev extras, and mypy not told to look away."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "gateway" / "server"
# Where clients are opened and handed around: the adapters, the app factory, the commands.
CLIENT_MODULES = [
    *sorted((SERVER / "adapters").rglob("*.py")),
    SERVER / "app.py",
    SERVER / "commands.py",
]
# Names the gateway gives an aiobotocore client (arguments, attributes, properties).
CLIENT_NAMES = {"s3", "_s3", "sqs", "_sqs", "client"}
CLIENT_TYPES = {"S3Client", "SQSClient"}


def _annotation(node: ast.expr | None) -> str:
    return "" if node is None else ast.unparse(node)


def _client_annotations() -> list[tuple[str, str, str]]:
    """(where, name, annotation) of every argument, annotated attribute and property or
    function named as a client is, where clients are opened and handed around."""
    found = []
    for path in CLIENT_MODULES:
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arg) and node.arg in CLIENT_NAMES:
                found.append((where, node.arg, _annotation(node.annotation)))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
                if node.target.attr in CLIENT_NAMES:
                    found.append((where, node.target.attr, _annotation(node.annotation)))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                node.name in CLIENT_NAMES or re.fullmatch(r"open_\w+_client", node.name)
            ):
                found.append((where, node.name, _annotation(node.returns)))
    return found


CLIENTS = _client_annotations()


@pytest.mark.parametrize(("where", "name", "annotation"), CLIENTS)
def test_a_client_is_typed_with_the_stubs(where: str, name: str, annotation: str) -> None:
    assert set(re.findall(r"\w+", annotation)) & CLIENT_TYPES, (
        f"{where}: {name} is annotated {annotation or 'nothing'}, not S3Client or SQSClient"
    )


def test_the_scan_finds_the_clients() -> None:
    # Guards the guard: the store, the JSON objects, the lifecycle merge, the forwarder, the
    # demo deployer and the factories that open them are all seen.
    names = {(Path(where).stem, name) for where, name, _ in CLIENTS}
    assert {
        ("aws", "open_s3_client"),
        ("aws", "open_sqs_client"),
        ("s3", "_s3"),
        ("json_objects", "_s3"),
        ("lifecycle", "s3"),
        ("forwarders", "client"),
        ("demo_deployer", "sqs"),
        ("app", "s3"),
    } <= names


def test_the_stubs_are_pinned_and_mypy_reads_them() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = project["project"]["optional-dependencies"]["dev"]
    assert "types-aiobotocore[s3,sqs]==3.10.0" in dev
    assert any(d.startswith("botocore-stubs==") for d in dev)
    ignored = {
        module
        for override in project["tool"]["mypy"].get("overrides", [])
        if override.get("ignore_missing_imports")
        for module in override["module"]
    }
    assert not {m for m in ignored if m.split(".")[0] in ("aiobotocore", "botocore")}
    assert project["tool"]["mypy"]["strict"] is True


def _minor(package: str) -> str:
    return ".".join(metadata.version(package).split(".")[:2])


def test_the_stubs_describe_the_aiobotocore_and_botocore_installed() -> None:
    """Stubs of another aiobotocore would check the calls against another API: when aiobotocore
    moves, its stubs move with it (pyproject's dev extras)."""
    assert _minor("types-aiobotocore") == _minor("aiobotocore")
    assert (
        _minor("types-aiobotocore-s3") == _minor("types-aiobotocore-sqs") == _minor("aiobotocore")
    )
    assert _minor("botocore-stubs") == _minor("botocore")
