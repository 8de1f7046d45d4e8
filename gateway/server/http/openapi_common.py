"""What every part of the OpenAPI document shares: schema helpers, the error responses and their
shapes (from the code table of ``gateway.error_codes``), the common parameters."""

from __future__ import annotations

from typing import Any

from gateway.error_codes import CODES, Code
from gateway.ids import SOURCE_ID_REGEX

Schema = dict[str, Any]
# The source id in paths: a lowercase UUID4 as the gateway issues them (anything else is 404).
SOURCE_ID_PATTERN = f"^{SOURCE_ID_REGEX}$"
STRING: Schema = {"type": "string"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: Schema, description: str, headers: Schema | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def with_codes(description: str, codes: tuple[Code, ...]) -> str:
    """``description`` naming the codes the answer may carry (``tests/test_error_codes.py`` checks
    each against the table's status)."""
    if not codes:
        return description
    return f"{description} ({', '.join(f'`code: {code}`' for code in codes)})."


def error(description: str, *codes: Code, headers: Schema | None = None) -> Schema:
    return json_response(ref("Error"), with_codes(description, codes), headers)


def token_error(description: str) -> Schema:
    return json_response(
        ref("TokenError"), with_codes(description, (Code.TOKEN_INVALID, Code.TOKEN_EXPIRED))
    )


REQUEST_ID_HEADER: Schema = {
    "X-Request-ID": {
        "description": "The request's id, also in its access log line.",
        "schema": STRING,
    }
}
RETRY_AFTER: Schema = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": STRING}
}
_WWW_AUTHENTICATE: Schema = {
    "WWW-Authenticate": {"description": "Always `Bearer`.", "schema": STRING}
}
RATE_LIMIT_HEADERS: Schema = {
    **RETRY_AFTER,
    "RateLimit-Policy": {
        "description": "The limit (IETF draft-ietf-httpapi-ratelimit-headers): "
        '`"api";q=<burst>;w=<seconds>` or `"uploads";q=<n>;qu="concurrent-requests"`.',
        "schema": STRING,
    },
    "RateLimit": {
        "description": 'What is left: `"api";r=0;t=<seconds until the next request>`.',
        "schema": STRING,
    },
}


def common_errors() -> Schema:
    """Responses any operation may give: an unknown route or method, storage trouble.

    No ``default`` response: every status the gateway can answer is listed, so the fuzz test's
    status-code check means something."""
    return {
        "404": json_response(
            ref("NotFound"), "Not found (`resource` says what: `source` or `route`)."
        ),
        "405": error("Method not allowed."),
        "417": error("An `Expect` header other than `100-continue`."),
        "502": error("The object store (or deployer) answered with an error."),
        "503": error("The object store is unreachable or failing.", headers=RETRY_AFTER),
    }


def rate_limited(what: str) -> Schema:
    return {"429": error(f"{what}; auth.limits", Code.RATE_LIMITED, headers=RATE_LIMIT_HEADERS)}


def auth_errors() -> Schema:
    return {
        "401": error(
            "Missing or unknown API token, or an identity-provider JWT that is not valid.",
            headers=_WWW_AUTHENTICATE,
        ),
        **rate_limited("Past the token's request rate"),
    }


def forbidden() -> Schema:
    return error("The token may not deploy this app", Code.FORBIDDEN)


def token_param(purpose: str) -> Schema:
    return {
        "name": "token",
        "in": "query",
        "required": True,
        "description": f"The {purpose} token of the source URL (signed, timed, bound to the id).",
        "schema": STRING,
    }


SOURCE_ID_PARAM: Schema = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": SOURCE_ID_PATTERN},
}
APP_PARAM: Schema = {
    "name": "app",
    "in": "path",
    "required": True,
    "description": "Lowercase letters, digits and dashes, 3 to 48 characters.",
    "schema": STRING,
}


def error_schemas() -> Schema:
    """The error bodies: the code table's codes, the not-found and validation shapes."""
    return {
        "Error": {
            "type": "object",
            "description": "401, 405, 409, 413, 5xx: `error` only; 400 and 403 add `code`. "
            "Every code: " + "; ".join(f"`{c}` ({e.status}) {e.meaning}" for c, e in CODES.items()),
            "required": ["error"],
            "properties": {
                "error": STRING,
                "code": {"type": "string", "enum": [str(code) for code in CODES]},
            },
        },
        "TokenError": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {
                "error": STRING,
                "code": {"type": "string", "enum": [Code.TOKEN_INVALID, Code.TOKEN_EXPIRED]},
            },
        },
        "NotFound": {
            "type": "object",
            "required": ["resource", "error"],
            "properties": {"resource": STRING, "error": {"const": "not found"}},
        },
        "ValidationErrors": {
            "type": "object",
            "required": ["errors"],
            "properties": {
                "errors": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "array", "minItems": 1, "items": STRING},
                }
            },
        },
    }
