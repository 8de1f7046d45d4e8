"""The OpenAPI description of what the platform's own clients call besides the deployments
endpoints: the token exchange, who the token is, the regions, the app object (and, in text, its
deployments stream). Merged into the document by ``gateway.server.http.openapi``."""

from __future__ import annotations

from typing import Any

from gateway.ids import APP_NAME_REGEX

Schema = dict[str, Any]
APP_NAME_PATTERN = f"^{APP_NAME_REGEX}$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _string_object(*names: str) -> Schema:
    return {
        "type": "object",
        "required": list(names),
        "properties": {name: {"type": "string"} for name in names},
    }


def platform_schemas() -> Schema:
    return {
        "ExchangedToken": {
            "type": "object",
            "required": ["token"],
            "properties": {
                "token": {
                    "type": "string",
                    "description": "A JWT (HS256): `sub` the token's name, `exp` "
                    "`auth.exchange_ttl_seconds` ahead. Send it as `Authorization: Bearer`.",
                }
            },
        },
        "User": {
            "type": "object",
            "required": ["user"],
            "properties": {"user": _string_object("id", "username", "email", "fullname")},
        },
        "Regions": {
            "type": "object",
            "required": ["regions"],
            "properties": {
                "regions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "api": {"type": "string"},
                            "database_api": {"type": "string"},
                            "default": {"type": "boolean"},
                        },
                    },
                }
            },
        },
        "App": {
            "type": "object",
            "required": ["app"],
            "properties": {
                "app": {
                    "type": "object",
                    "required": ["id", "name", "created_at", "links"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "created_at": {
                            "type": ["string", "null"],
                            "description": "Always null: the gateway keeps no app registry.",
                        },
                        "links": _string_object("deployments_stream"),
                    },
                }
            },
        },
    }


def platform_paths(common: Schema, auth_errors: Schema, error: Schema) -> Schema:
    """``common``, ``auth_errors``: the responses every operation shares; ``error``: the error
    body's response for one status."""

    def operation(summary: str, operation_id: str, ok: Schema, **extra: Any) -> Schema:
        return {
            "summary": summary,
            "operationId": operation_id,
            "tags": ["platform"],
            **extra,
            "responses": {"200": ok, **auth_errors, **extra.pop("responses", {}), **common},
        }

    app_param = {
        "name": "app",
        "in": "path",
        "required": True,
        "description": "Lowercase letters, digits and dashes, 3 to 48 characters.",
        "schema": {"type": "string"},
    }
    return {
        "/v1/tokens/exchange": {
            "post": operation(
                "Exchange the API token for a short-lived JWT",
                "exchangeToken",
                _json(_ref("ExchangedToken"), "The JWT."),
                security=[{"basic": []}],
                description="HTTP Basic with any user and the API token as password (the "
                "platform's clients send an empty user). Only an API token is exchanged.",
            )
        },
        "/v1/users/self": {
            "get": operation(
                "Who the token is",
                "usersSelf",
                _json(_ref("User"), "The token's user: its name, configured e-mail and name."),
            )
        },
        "/v1/regions": {
            "get": operation(
                "The regions: one, this gateway",
                "listRegions",
                _json(_ref("Regions"), "The platform's CLI reads it before regional commands."),
            )
        },
        "/v1/apps/{app}/deployments/stream": {"get": _stream_operation(app_param, error, common)},
        "/v1/apps/{app}": {
            "get": operation(
                "The app, with the address of its deployments stream",
                "getApp",
                _json(_ref("App"), "An app the token may deploy."),
                parameters=[app_param],
                responses={
                    "403": error,
                    "404": _json(_ref("NotFound"), "Not a valid app name (`resource: app`)."),
                },
            )
        },
    }


def _stream_operation(app_param: Schema, error: Schema, common: Schema) -> Schema:
    """The WebSocket, described in text: OpenAPI has no words for its frames."""
    return {
        "summary": "Every deployment of the app, live (a WebSocket)",
        "operationId": "streamDeployments",
        "tags": ["platform"],
        "security": [],
        "parameters": [{**app_param, "schema": {"type": "string", "pattern": APP_NAME_PATTERN}}],
        "description": STREAM_DESCRIPTION,
        "responses": {
            "101": {"description": "Switching protocols: the stream."},
            "400": error,
            **common,
            "503": _json(
                _ref("Error"), "The object store fails, or `deployments.max_streams` are open."
            ),
        },
    }


STREAM_DESCRIPTION = (
    "A WebSocket (`links.deployments_stream` of the app). The handshake carries no credential "
    "and any `Origin`; the client's first text frame is "
    '`{"type": "auth", "data": {"token": "<API token or JWT>"}}` within '
    "`deployments.stream_auth_timeout`, else the server closes with 1008. Then one JSON object "
    'per text frame: `{"type": "new", "id": D, "data": {"deployment": {...}}}`, '
    '`{"type": "log", "id": D, "data": {"content"}}`, `{"type": "status", "id": D, "data": '
    '{"status"}}`, and `{"type": "ping", "data": {"ts"}}` every 15 s; recent deployments are '
    "replayed first. Closed 1001 on a graceful shutdown."
)
