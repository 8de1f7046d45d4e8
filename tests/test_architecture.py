"""The package's layers, checked from its imports and from what importing loads.

- The client and the server never import each other; the client's commands, run through
  ``gateway/__main__.py``, load no server module, no botocore and no prometheus_client.
- Inside the server, imports flow http -> domain -> adapters, with one way back: the adapters
  store the domain's types (a deployment's record, an event-log entry, the storage interface
  they implement), so an adapter may import a domain module that itself reaches no adapter,
  directly or not. No module cycle either way.
- Handlers reach adapters only through what the app factory hands them: no http module imports
  an adapter.
- Importing any domain module loads neither aiohttp nor botocore (checked in a fresh interpreter
  per module, so an import hidden two modules away counts).
- The deployment statuses are spelled in ``gateway/statuses.py`` only; modules and functions stay
  small.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.__main__ import CLIENT_COMMANDS, SERVER_COMMANDS, build_parser
from gateway.statuses import STATUSES

from .helpers import TOKEN, Gateway, Spawn

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


def reaches_adapters(name: str, seen: set[str] | None = None) -> bool:
    """Whether ``name`` imports an adapter, directly or through other modules of the package."""
    seen = set() if seen is None else seen
    for target in internal_imports(name) - seen:
        seen.add(target)
        if layer(target) == "adapters" or reaches_adapters(target, seen):
            return True
    return False


@pytest.mark.parametrize("name", sorted(n for n in ALL if layer(n) in ("domain", "adapters")))
def test_imports_flow_http_domain_adapters(name: str) -> None:
    # A lower layer never imports http; an adapter imports only the domain's types, modules that
    # reach no adapter themselves (so storing a domain type never makes a loop of layers).
    wrong = {m for m in internal_imports(name) if layer(m) == "http"}
    if layer(name) == "adapters":
        wrong |= {m for m in internal_imports(name) if layer(m) == "domain" and reaches_adapters(m)}
    assert not wrong, f"{name} imports {sorted(wrong)}"


@pytest.mark.parametrize("name", sorted(n for n in ALL if layer(n) == "http"))
def test_handlers_reach_adapters_only_through_the_app_factory(name: str) -> None:
    wrong = {m for m in internal_imports(name) if layer(m) == "adapters"}
    assert not wrong, f"{name} imports {sorted(wrong)}: take it from create_app instead"


def loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(run.stdout.splitlines()[-1]))


def third_party(loaded: set[str], *names: str) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in names)


@pytest.mark.parametrize("name", sorted(n for n in ALL if layer(n) == "domain"))
def test_importing_the_domain_loads_no_aiohttp_nor_botocore(name: str) -> None:
    loaded = loaded_by(f"import {name}")
    assert name in loaded  # guards the guard: the module was imported
    heavy = third_party(loaded, "aiohttp", "botocore", "aiobotocore")
    assert not heavy, f"importing {name} loads {heavy[:5]}"


async def test_a_client_command_loads_no_server_module(
    demo_gateway: Gateway, spawn: Spawn, tmp_path: Path
) -> None:
    """``gateway deploy DIR`` (upload, deploy, follow to success), as the installed script runs
    it: no gateway.server module, no botocore, no prometheus_client in the process at its exit."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Procfile").write_text("web: ./run\n")
    modules = tmp_path / "modules.json"
    script = (
        "import atexit, json, sys\n"
        "out, sys.argv = sys.argv[1], ['gateway', *sys.argv[2:]]\n"
        "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
        "from gateway.__main__ import main\n"
        "sys.exit(main())\n"
    )
    argv = [str(modules), "deploy", "--app", "my-app", "--json", str(tmp_path / "app")]
    env = {"GATEWAY_API_URL": demo_gateway.url, "GATEWAY_TOKEN": TOKEN}
    proc = await spawn(
        sys.executable,
        "-c",
        script,
        *argv,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["deployment"]["status"] == "success"
    loaded = set(json.loads(modules.read_text()))
    assert "gateway.client.deploy" in loaded  # guards the guard: the command ran
    server = sorted(m for m in loaded if m.startswith("gateway.server"))
    assert not server, f"gateway deploy loads {server[:5]}"
    heavy = third_party(loaded, "botocore", "aiobotocore", "prometheus_client")
    assert not heavy, f"gateway deploy loads {heavy[:5]}"


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_main_knows_which_commands_are_the_clients() -> None:
    # A client command missing from CLIENT_COMMANDS would still run, with the server's parsers.
    assert subcommands(build_parser(server=False)) == CLIENT_COMMANDS
    assert subcommands(build_parser()) == CLIENT_COMMANDS | SERVER_COMMANDS


def status_literals(tree: ast.Module) -> list[int]:
    """Lines of collection literals (tuple, list, set, dict keys) naming two statuses or more."""
    found = []
    for node in ast.walk(tree):
        items: list[ast.expr | None] = []
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = list(node.elts)
        elif isinstance(node, ast.Dict):
            items = list(node.keys)
        named = {i.value for i in items if isinstance(i, ast.Constant) and i.value in STATUSES}
        if len(named) >= 2:
            found.append(node.lineno)
    return found


@pytest.mark.parametrize("name", sorted(n for n in ALL if n != "gateway.statuses"))
def test_the_status_vocabulary_is_spelled_once(name: str) -> None:
    lines = status_literals(ALL[name])
    assert not lines, f"{name}, lines {lines}: import gateway.statuses instead"


def test_the_status_rule_sees_the_vocabulary() -> None:
    assert status_literals(ALL["gateway.statuses"])  # guards the guard


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
