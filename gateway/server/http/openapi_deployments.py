"""The OpenAPI description of deployments: create one from an archive URL, list and read them,
follow one live, and the events a deployer posts."""

from __future__ import annotations

from gateway.error_codes import Code
from gateway.ids import MAX_GIT_REF_LENGTH
from gateway.server.domain.deployments.event_log import MAX_EVENTS
from gateway.server.domain.deployments.records import (
    DEFAULT_PER_PAGE,
    EVENT_TYPES,
    MAX_EVENT_CONTENT,
    MAX_EVENT_ID,
    MAX_HOOK_LENGTH,
    MAX_PER_PAGE,
)
from gateway.server.domain.urlguard import MAX_URL_LENGTH
from gateway.server.http.openapi_common import (
    APP_PARAM,
    STRING,
    Schema,
    auth_errors,
    common_errors,
    error,
    forbidden,
    json_response,
    ref,
    token_error,
)
from gateway.statuses import STATUSES

_STATUSES = list(STATUSES)
_DEPLOYMENT_ID_PARAM: Schema = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The deployment's id (a UUID); anything else is 404.",
    "schema": STRING,
}
_MALFORMED = "Malformed JSON, or not an object"


def deployment_schemas() -> Schema:
    """The request, the deployment object, the list, and the events a deployer posts."""
    url = {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH}
    return {
        "DeploymentRequest": {
            "type": "object",
            "required": ["deployment"],
            "properties": {
                "deployment": {
                    "type": "object",
                    "description": "`download_url` and `source_url` are two names of the same "
                    "field (both present and different: 422); one of them is required.",
                    "properties": {
                        "git_ref": {
                            "type": "string",
                            "maxLength": MAX_GIT_REF_LENGTH,
                            "description": "Printable, not starting with `-` (an image tag).",
                        },
                        "download_url": url,
                        "source_url": url,
                        "postdeploy_hook": {
                            "type": "string",
                            "maxLength": MAX_HOOK_LENGTH,
                            "description": "A command run after the deployment (printable).",
                        },
                    },
                }
            },
        },
        "Deployment": {
            "type": "object",
            "description": "The platform's deployment object, as the gateway records it.",
            "required": ["deployment"],
            "properties": {"deployment": ref("DeploymentObject")},
        },
        "DeploymentObject": _deployment_object(),
        "Deployments": _deployment_list(),
        "DeploymentEvent": {
            "type": "object",
            "description": "One event, numbered by the deployer from 1. `status` events carry "
            "`status`, `log` events `content` (one or more lines, at most "
            f"{MAX_EVENT_CONTENT // 1024} KiB).",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": MAX_EVENT_ID},
                "type": {"type": "string", "enum": list(EVENT_TYPES)},
                "status": {"type": "string", "enum": _STATUSES},
                "content": STRING,
            },
        },
        "EventAccepted": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "integer"}},
        },
    }


def _deployment_object() -> Schema:
    nullable = {"type": ["string", "null"]}
    return {
        "type": "object",
        "required": ["id", "app_id", "created_at", "finished_at", "status", "links"],
        "properties": {
            "id": STRING,
            "app_id": STRING,
            "created_at": {"type": "string", "format": "date-time"},
            "finished_at": {**nullable, "description": "Set when the status becomes final."},
            "status": {"type": "string", "enum": _STATUSES},
            "git_ref": nullable,
            "type": {"const": "archive"},
            "source_url": STRING,
            "postdeploy_hook": nullable,
            "pusher": {
                "type": "object",
                "description": "The API token that created it: its name as `id`, "
                "`username` and `name`, its configured `email`.",
                "properties": {name: STRING for name in ("id", "username", "email", "name")},
            },
            "duration": {
                "type": ["integer", "null"],
                "description": "Seconds from creation to the final status; null until then.",
            },
            "links": {
                "type": "object",
                "properties": {"output": {"type": "string", "format": "uri"}},
            },
        },
    }


def _deployment_list() -> Schema:
    page = {"type": ["integer", "null"]}
    pagination = {
        "current_page": {"type": "integer"},
        "prev_page": page,
        "next_page": page,
        "total_pages": {"type": "integer"},
        "total_count": {"type": "integer"},
    }
    return {
        "type": "object",
        "required": ["deployments", "meta"],
        "properties": {
            "deployments": {"type": "array", "items": ref("DeploymentObject")},
            "meta": {
                "type": "object",
                "properties": {"pagination": {"type": "object", "properties": pagination}},
            },
        },
    }


def _reading(summary: str, ok: Schema, extra: list[Schema] | None = None) -> Schema:
    """A read of one app's deployments with an API token."""
    return {
        "summary": summary,
        "tags": ["deployments"],
        "parameters": [APP_PARAM, _DEPLOYMENT_ID_PARAM, *(extra or [])],
        "responses": {"200": ok, **auth_errors(), "403": forbidden(), **common_errors()},
    }


def deployment_operations() -> Schema:
    """Every deployments operation, by operationId."""
    text = {"type": "string"}
    return {
        "createDeployment": _create(),
        "listDeployments": _list(),
        "getDeployment": _reading(
            "One deployment, with its current status",
            json_response(ref("Deployment"), "The deployment."),
        ),
        "getDeploymentOutput": _reading(
            "The deployment's output so far",
            {
                "description": "The output lines; past the limit, one last line says the "
                "output was cut.",
                "content": {"text/plain": {"schema": text}},
            },
        ),
        "followDeployment": _follow(),
        "postDeploymentEvent": _report(),
    }


def _create() -> Schema:
    return {
        "summary": "Deploy an app from an archive URL",
        "tags": ["deployments"],
        "parameters": [
            {
                **APP_PARAM,
                "description": "Lowercase letters, digits and dashes, 3 to 48"
                " characters, starting with a letter and not ending with a dash.",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("DeploymentRequest")}},
        },
        "responses": {
            "201": json_response(ref("Deployment"), "Recorded and forwarded to the deployer."),
            "400": error(_MALFORMED, Code.INVALID_JSON),
            **auth_errors(),
            "403": forbidden(),
            "413": error("Body too large."),
            "415": error("Not `application/json`", Code.UNSUPPORTED_MEDIA_TYPE),
            "422": json_response(ref("ValidationErrors"), "Every bad field, named."),
            **common_errors(),
        },
    }


def _list() -> Schema:
    listing = _reading("List an app's deployments, newest first", {})
    listing["parameters"] = [
        APP_PARAM,
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {
            "name": "per_page",
            "in": "query",
            "description": f"At most {MAX_PER_PAGE} (more is read as {MAX_PER_PAGE}); "
            f"{DEFAULT_PER_PAGE} by default.",
            "schema": {"type": "integer", "minimum": 1},
        },
    ]
    listing["responses"]["200"] = json_response(ref("Deployments"), "One page.")
    listing["responses"]["400"] = error(
        "`page` or `per_page` is not a positive integer", Code.BAD_REQUEST
    )
    return listing


def _follow() -> Schema:
    return _reading(
        "Follow a deployment live (server-sent events)",
        {
            "description": "`text/event-stream`: every event so far, then new ones as they are "
            "stored, each as `id: N` (its place in the order the gateway took the events), "
            "`event: status|log`, `data: {json}`; a `:` comment every 15 s; the stream ends "
            "after the final status, and is cut short (the connection closed) on an error. "
            "`curl -N` follows it.",
            "content": {"text/event-stream": {"schema": STRING}},
        },
        [
            {
                "name": "Last-Event-ID",
                "in": "header",
                "description": "Resume after this place in the stream (an `id:`).",
                "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
            }
        ],
    )


def _report() -> Schema:
    return {
        "summary": "Report a status or output (the deployer, with the job's events_url)",
        "tags": ["deployments"],
        "parameters": [
            APP_PARAM,
            _DEPLOYMENT_ID_PARAM,
            {
                "name": "token",
                "in": "query",
                "required": True,
                "description": "The events token of the job's events_url (bound to the "
                "app and the deployment).",
                "schema": STRING,
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("DeploymentEvent")}},
        },
        "responses": {
            "200": json_response(ref("EventAccepted"), "Stored (or a retry of a stored event)."),
            "400": error(_MALFORMED, Code.INVALID_JSON),
            "403": token_error("Bad, tampered, another deployment's or expired."),
            "409": error("A different event with this id, or an event after the final status."),
            "413": error(
                f"Body too large, or the deployment holds {MAX_EVENTS - 1:,} events and this is "
                "not a final status",
                Code.TOO_MANY_EVENTS,
            ),
            "415": error("Not `application/json`", Code.UNSUPPORTED_MEDIA_TYPE),
            "422": json_response(
                ref("ValidationErrors"), "Unknown type or status, bad id or content."
            ),
            **common_errors(),
        },
    }
