"""One route table (``gateway.server.http.routes``): the app registers exactly its routes, in its
order, with the handler and ``Expect`` behaviour it names; the OpenAPI document's paths are its
paths; and every path the gateway or the client builds is a template of ``gateway.paths``."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import paths
from gateway.server.http.openapi import document
from gateway.server.http.routes import ROUTES, Route, routes_of
from gateway.server.routing import EXPECT_HANDLERS

from .helpers import Gateway, StartGateway

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def registered(gateway: Gateway) -> list[tuple[str, str]]:
    """The app's routes, as (method, path template), in the router's order."""
    found = []
    for route in gateway.app.router.routes():
        if route.resource is None or not route.resource.canonical.startswith("/"):
            continue  # the unmet-Expect resource, which matches no path of its own
        found.append((route.method, route.resource.canonical))
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS}


def table(routes: list[Route]) -> list[tuple[str, str]]:
    return [(route.method, route.path) for route in routes]


async def test_the_app_registers_the_table(start_gateway: StartGateway) -> None:
    gateway = await start_gateway({"metrics": {"enabled": True, "token": "m" * 16}})
    assert registered(gateway) == table(routes_of(gateway.config))
    assert table(routes_of(gateway.config)) == table(list(ROUTES))


async def test_a_route_the_config_turns_off_is_in_neither(start_gateway: StartGateway) -> None:
    gateway = await start_gateway({"metrics": {"enabled": False}})
    served = table(routes_of(gateway.config))
    assert ("GET", paths.METRICS) not in served
    assert registered(gateway) == served
    assert documented(document(gateway.config)) == set(served)


async def test_each_route_has_the_handler_and_expect_it_names(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    routes = [r for r in gateway.app.router.routes() if r.resource is not None]
    by_key = {(r.method, r.resource.canonical): r for r in routes if r.resource is not None}
    for route in routes_of(gateway.config):
        served = by_key[(route.method, route.path)]
        assert served._expect_handler is EXPECT_HANDLERS[route.expect], route.name
        # A method of a handler object, or a protocol dispatch (the upload's shared methods).
        name = route.handler.rsplit(".", 1)[-1]
        assert served.handler.__name__ in (name, "dispatch"), route.name
        assert (served.handler.__name__ == "dispatch") == ("." not in route.handler) or (
            route.handler == "openapi"
        ), route.name


async def test_openapi_documents_the_table(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}{paths.OPENAPI}") as resp:
        doc = await resp.json()
    served = routes_of(gateway.config)
    assert documented(doc) == set(table(served))
    for route in served:
        operation = doc["paths"][route.path][route.method.lower()]
        assert operation["operationId"] == route.name
        # Only API-token routes take the document's own security (bearer or basic).
        assert ("security" not in operation) == (route.auth == "api"), route.name


def test_a_route_added_to_the_table_alone_fails_the_document(gateway_config: Any) -> None:
    # The document's operations come by the route's name: a route without one cannot be
    # documented silently.
    extra = Route("GET", "/v1/extra", "probes.healthz", "none", "extraOperation")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gateway.server.http.openapi.routes_of", lambda config: [extra])
        with pytest.raises(KeyError, match="extraOperation"):
            document(gateway_config)


def test_names_are_unique_and_methods_consecutive_per_path() -> None:
    assert len({route.name for route in ROUTES}) == len(ROUTES)
    assert len({(route.method, route.path) for route in ROUTES}) == len(ROUTES)
    # aiohttp makes one resource of consecutive routes on one path; a path split in two would
    # answer 405 with half its methods in Allow.
    seen: list[str] = []
    for route in ROUTES:
        if not seen or seen[-1] != route.path:
            assert route.path not in seen or route.path == paths.DEPLOYMENTS, route.path
            seen.append(route.path)


def test_every_template_is_a_route() -> None:
    templates = {
        value
        for name, value in vars(paths).items()
        if name.isupper() and isinstance(value, str) and value.startswith("/")
    }
    assert templates == {route.path for route in ROUTES}


def test_fill_encodes_each_value_as_one_segment() -> None:
    assert paths.fill(paths.DEPLOYMENT_EVENTS, app="a/b", id="x y") == (
        "/v1/apps/a%2Fb/deployments/x%20y/events"
    )


def string_constants(tree: ast.Module) -> list[tuple[int, str]]:
    """Every string literal but docstrings, with its line."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_paths_are_spelled_only_in_the_templates(path: Path) -> None:
    """A URL builder that wrote ``/v1/...`` itself would drift from the routes."""
    if path == PACKAGE / "paths.py":
        return
    for line, value in string_constants(ast.parse(path.read_text())):
        spelled = "/v1/" in value or value in {paths.HEALTHZ, paths.READYZ, paths.METRICS}
        # Prose (a description, a log line) may name a route; a path it is not.
        prose = " " in value.strip()
        assert not spelled or prose, f"{path.relative_to(PACKAGE)}:{line}: {value!r}"


@pytest.fixture
def gateway_config(gateway: Gateway) -> Any:
    return dataclasses.replace(gateway.config)
