"""The OpenAPI 3.1 description of the gateway, served at ``GET /v1/openapi.json``.

Built in code rather than kept as a file so that it carries this instance's ``public_url`` and
limits, and so that ``create_app`` reads no file. Its paths are the route table's
(``gateway.server.http.routes``): each route's operation comes from the module of its resource
(sources, resumable uploads, deployments, the platform's API; the probes here), by the route's
name, with the ``security`` its auth kind says. ``tests/test_openapi.py`` keeps it true: it
validates the document, checks that every route of the application is in it, and fuzzes every
operation with schemathesis against the documented response schemas.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.config import Config
from gateway.server.http.openapi_common import (
    RETRY_AFTER,
    Schema,
    auth_errors,
    common_errors,
    error_schemas,
    json_response,
    ref,
)
from gateway.server.http.openapi_deployments import deployment_operations, deployment_schemas
from gateway.server.http.openapi_platform import platform_operations, platform_schemas
from gateway.server.http.openapi_resumable import resumable_operations
from gateway.server.http.openapi_sources import source_operations, source_schemas
from gateway.server.http.routes import Auth, routes_of

_TAGS = [
    {"name": "sources", "description": "Create, upload and download archives."},
    {
        "name": "deployments",
        "description": "Deploy from an archive URL, and follow what becomes of it.",
    },
    {"name": "operations", "description": "Probes, metrics and this document."},
    {
        "name": "platform",
        "description": "What the platform's own CLI and JavaScript client call: the "
        "token exchange, the user, the regions, the app and its deployments stream.",
    },
]


def _status_schema() -> Schema:
    return {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "error": {"type": "string"},
            "checks": {
                "type": "object",
                "description": "/readyz: each dependency's latest background check.",
                "additionalProperties": {
                    "type": "object",
                    "required": ["status", "required"],
                    "properties": {
                        "status": {"enum": ["ok", "unavailable", "unknown"]},
                        "required": {"type": "boolean"},
                        "age_seconds": {"type": "number"},
                        "error": {"type": "string"},
                    },
                },
            },
        },
    }


def _probe(summary: str, ok: str, schema: Schema, extra: Schema | None = None) -> Schema:
    return {
        "summary": summary,
        "tags": ["operations"],
        "responses": {"200": json_response(schema, ok), **(extra or {}), **common_errors()},
    }


def _with_head(name: str, get: Schema) -> Schema:
    """``GET`` and its ``HEAD``: same answers, no body."""
    head_responses = {
        status: {k: v for k, v in response.items() if k != "content"}
        for status, response in get["responses"].items()
    }
    return {name: get, f"{name}Head": {**get, "responses": head_responses}}


def _operations_probes() -> Schema:
    metrics = {
        "summary": "Prometheus metrics (text format)",
        "tags": ["operations"],
        "responses": {
            "200": {
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **auth_errors(),
            **common_errors(),
        },
    }
    not_ready = json_response(ref("Status"), "Not ready: `error` says why.", RETRY_AFTER)
    return {
        **_with_head(
            "healthz", _probe("Liveness: 200 while the process serves", "Serving.", ref("Status"))
        ),
        **_with_head(
            "readyz",
            _probe(
                "Readiness: the required dependencies answered their latest background check",
                "Ready.",
                ref("Status"),
                {"503": not_ready},
            ),
        ),
        **_with_head("metrics", metrics),
        **_with_head("openapi", _probe("This document", "OpenAPI 3.1.", {"type": "object"})),
    }


def operations(config: Config) -> Schema:
    """Every route's operation, by the route's name (its operationId)."""
    return {
        **source_operations(config),
        **resumable_operations(),
        **deployment_operations(),
        **platform_operations(),
        **_operations_probes(),
    }


def _security(auth: Auth, config: Config) -> Schema:
    """The operation's ``security``: none of its own for the API token (the document's)."""
    if auth == "api":
        return {}
    if auth == "basic":
        return {"security": [{"basic": []}]}
    if auth == "metrics" and config.metrics.token:
        return {"security": [{"metricsToken": []}]}
    return {"security": []}  # a token in the URL, or none


def paths(config: Config) -> Schema:
    """The route table's paths, each method with its operation."""
    described = operations(config)
    found: Schema = {}
    for route in routes_of(config):
        operation = {
            **described[route.name],
            "operationId": route.name,
            **_security(route.auth, config),
        }
        found.setdefault(route.path, {})[route.method.lower()] = operation
    return found


def document(config: Config) -> Schema:
    """The OpenAPI 3.1 document for a gateway running ``config``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sources-gateway",
            "version": "1",
            "description": "Pre-authenticated upload and download URLs for code archives, "
            "streamed into S3, and deployments from an archive URL. Source URLs carry their "
            "own token; the API takes `Authorization: Bearer <token>` or HTTP Basic with the "
            "token as password.",
        },
        "servers": [{"url": config.server.base_url}],
        "security": [{"bearer": []}, {"basic": []}],
        "tags": _TAGS,
        "paths": paths(config),
        "components": {
            "schemas": {
                **error_schemas(),
                **source_schemas(),
                **deployment_schemas(),
                "Status": _status_schema(),
                **platform_schemas(),
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Any user name (`curl -u :$TOKEN`), the token as password.",
                },
                "metricsToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_handler(config: Config) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /v1/openapi.json``: the document, serialized once."""
    body = json.dumps(document(config), indent=1).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return openapi
