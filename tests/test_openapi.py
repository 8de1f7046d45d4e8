"""GET /v1/openapi.json: a valid OpenAPI 3.1 document that describes every route of the app."""

from __future__ import annotations

from typing import Any

import aiohttp
from openapi_spec_validator import validate

from gateway.server.http.openapi import document

from .helpers import Gateway, StartGateway

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def app_routes(gateway: Gateway) -> set[tuple[str, str]]:
    routes = set()
    for route in gateway.app.router.routes():
        assert route.resource is not None
        # canonical is the path template: "/v1/sources/{id}" for the regex-constrained route.
        routes.add((route.method.lower(), route.resource.canonical))
    return routes


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, path) for path, item in doc["paths"].items() for m in item if m in METHODS}


async def fetch(gateway: Gateway, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{gateway.url}/v1/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body: dict[str, Any] = await resp.json()
        return body


async def test_document_is_valid_openapi_31(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    doc = await fetch(gateway, http)
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    assert doc == document(gateway.config)
    assert doc["servers"] == [{"url": gateway.config.server.base_url}]


async def test_every_route_is_documented(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        {"cors": {"allowed_origins": ["https://a.example"]}, "metrics": {"token": "m" * 16}}
    )
    doc = await fetch(gateway, http)
    routes = app_routes(gateway)
    assert routes, "the app has routes"
    # Every route is documented, and nothing documented is missing from the app.
    assert routes == documented(doc), routes ^ documented(doc)
    assert ("post", "/v1/apps/{app}/deployments") in routes
    validate(doc)
    assert doc["paths"]["/metrics"]["get"]["security"] == [{"metricsToken": []}]


async def test_error_shapes_are_described(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    doc = await fetch(gateway, http)
    schemas = doc["components"]["schemas"]
    assert schemas["ValidationErrors"]["properties"]["errors"]["minProperties"] == 1
    assert schemas["NotFound"]["required"] == ["resource", "error"]
    deploy = doc["paths"]["/v1/apps/{app}/deployments"]["post"]
    assert {"201", "401", "403", "415", "400", "422", "502"} <= set(deploy["responses"])
    body = schemas["DeploymentRequest"]["properties"]["deployment"]["properties"]
    assert {"git_ref", "download_url", "source_url", "postdeploy_hook"} == set(body)
    upload = doc["paths"]["/v1/sources/{id}"]["put"]["responses"]
    assert upload["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Upload"
    }
    assert {"403", "413"} <= set(upload)
