"""The OpenAPI description of what the platform's own clients call besides the deployments
endpoints: the token exchange, who the token is, the regions, the app object (and, in text, its
deployments stream). Merged into the document by ``gateway.server.http.openapi``."""

from __future__ import annotations

from typing import Any

from gateway.error_codes import Code
from gateway.ids import APP_NAME_REGEX
from gateway.server.http.openapi_common import (
    APP_PARAM,
    Schema,
    auth_errors,
    common_errors,
    error,
    forbidden,
    json_response,
    ref,
)

APP_NAME_PATTERN = f"^{APP_NAME_REGEX}$"


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


def platform_operations() -> Schema:
    """The token exchange, the user, the regions, the app and its stream, by operationId."""

    def operation(summary: str, ok: Schema, **extra: Any) -> Schema:
        responses = extra.pop("responses", {})
        return {
            "summary": summary,
            "tags": ["platform"],
            **extra,
            "responses": {"200": ok, **auth_errors(), **responses, **common_errors()},
        }

    return {
        "exchangeToken": operation(
            "Exchange the API token for a short-lived JWT",
            json_response(ref("ExchangedToken"), "The JWT."),
            description="HTTP Basic with any user and the API token as password (the "
            "platform's clients send an empty user). Only an API token is exchanged.",
        ),
        "usersSelf": operation(
            "Who the token is",
            json_response(ref("User"), "The token's user: its name, configured e-mail and name."),
        ),
        "listRegions": operation(
            "The regions: one, this gateway",
            json_response(ref("Regions"), "The platform's CLI reads it before regional commands."),
        ),
        "streamDeployments": _stream_operation(),
        "getApp": operation(
            "The app, with the address of its deployments stream",
            json_response(ref("App"), "An app the token may deploy."),
            parameters=[APP_PARAM],
            responses={
                "403": forbidden(),
                "404": json_response(ref("NotFound"), "Not a valid app name (`resource: app`)."),
            },
        ),
    }


def _stream_operation() -> Schema:
    """The WebSocket, described in text: OpenAPI has no words for its frames."""
    return {
        "summary": "Every deployment of the app, live (a WebSocket)",
        "tags": ["platform"],
        "parameters": [{**APP_PARAM, "schema": {"type": "string", "pattern": APP_NAME_PATTERN}}],
        "description": STREAM_DESCRIPTION,
        "responses": {
            "101": {"description": "Switching protocols: the stream."},
            "400": error("Not a WebSocket handshake", Code.BAD_REQUEST),
            **common_errors(),
            "503": json_response(
                ref("Error"), "The object store fails, or `deployments.max_streams` are open."
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
