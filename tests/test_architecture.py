"""The package's layers, checked from its imports: the client and the server never import each
other, the domain never imports aiohttp, imports flow http -> domain -> adapters with no cycle,
and modules and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, tree: ast.Module) -> set[str]:
    """Every module ``name`` imports (absolute names), at any depth of the file."""
    found: set[str] = set()
    package = name if name.count(".") == 0 else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


ALL = modules()


def internal_imports(name: str) -> set[str]:
    return {m for m in imports_of(name, ALL[name]) if m in ALL and m != name}


def layer(name: str) -> str:
    for prefix in ("gateway.server.http", "gateway.server.domain", "gateway.server.adapters"):
        if name.startswith(prefix):
            return prefix.rsplit(".", 1)[1]
    return ""


@pytest.mark.parametrize("name", sorted(n for n in ALL if n.startswith("gateway.client")))
def test_client_imports_nothing_of_the_server(name: str) -> None:
    assert not {m for m in imports_of(name, ALL[name]) if m.startswith("gateway.server")}


@pytest.mark.parametrize("name", sorted(n for n in ALL if n.startswith("gateway.server")))
def test_server_imports_nothing_of_the_client(name: str) -> None:
    assert not {m for m in imports_of(name, ALL[name]) if m.startswith("gateway.client")}


@pytest.mark.parametrize(
    "name", sorted(n for n in ALL if layer(n) in ("domain", "adapters") or n == "gateway.errors")
)
def test_domain_adapters_and_errors_import_no_aiohttp_server(name: str) -> None:
    web = {m for m in imports_of(name, ALL[name]) if m.startswith("aiohttp.web")}
    web |= {m for m in imports_of(name, ALL[name]) if m == "aiohttp" and layer(name) == "domain"}
    assert not web, f"{name} imports {sorted(web)}"


@pytest.mark.parametrize("name", sorted(n for n in ALL if layer(n) in ("domain", "adapters")))
def test_imports_flow_http_domain_adapters(name: str) -> None:
    # A lower layer never imports a higher one.
    higher = {"domain": ("http",), "adapters": ("http", "domain")}[layer(name)]
    wrong = {m for m in internal_imports(name) if layer(m) in higher}
    assert not wrong, f"{name} imports {sorted(wrong)}"


def test_no_import_cycles() -> None:
    graph = {name: internal_imports(name) for name in ALL}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        assert node not in visiting, " -> ".join([*visiting[visiting.index(node) :], node])
        visiting.append(node)
        for target in graph[node]:
            # A package's __init__ is imported on the way to its modules; it holds nothing.
            if ALL[target].body:
                visit(target)
        visiting.pop()
        done.add(node)

    for name in graph:
        visit(name)


@pytest.mark.parametrize("name", sorted(ALL))
def test_modules_and_functions_stay_small(name: str) -> None:
    tree = ALL[name]
    lines = max((getattr(n, "end_lineno", 0) or 0 for n in ast.walk(tree)), default=0)
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines"
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno:
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{name}.{node.name} has {length} lines"


def test_the_rules_see_the_layers() -> None:
    # Guards the guards: each layer has modules, so the checks above are not vacuous.
    assert {layer(n) for n in ALL} >= {"http", "domain", "adapters"}
    assert any(n.startswith("gateway.client.") for n in ALL)


def prepare_calls(tree: ast.Module) -> list[int]:
    """Lines where ``something.prepare(...)`` is called."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "prepare"
    ]


@pytest.mark.parametrize("name", sorted(n for n in ALL if n.startswith("gateway.server")))
def test_responses_are_prepared_only_by_start_stream(name: str) -> None:
    """A handler that prepared a response itself would send it without ``X-Request-ID`` and
    log its Content-Length instead of the bytes it wrote: the middleware stamps only responses
    that are not sent yet, and ``start_stream`` the ones handlers stream."""
    if name == "gateway.server.http.streams":
        assert prepare_calls(ALL[name])  # the one place (guards the rule)
    else:
        assert prepare_calls(ALL[name]) == [], f"{name}: use streams.start_stream"
