"""The one spelling of every path the gateway serves, as path templates (``{name}`` for a
parameter, as OpenAPI writes them): the server's route table registers them, its OpenAPI document
lists them, and both the server's URL builders and the client fill them in (the client may not
import the server: this module imports nothing of either, as ``gateway.ids``)."""

from __future__ import annotations

from urllib.parse import quote

SOURCES = "/v1/sources"
SOURCE = "/v1/sources/{id}"
UPLOAD = "/v1/sources/{id}/uploads/{uid}"
TOKENS_EXCHANGE = "/v1/tokens/exchange"
USERS_SELF = "/v1/users/self"
REGIONS = "/v1/regions"
APP = "/v1/apps/{app}"
DEPLOYMENTS = "/v1/apps/{app}/deployments"
DEPLOYMENTS_STREAM = "/v1/apps/{app}/deployments/stream"
DEPLOYMENT = "/v1/apps/{app}/deployments/{id}"
DEPLOYMENT_OUTPUT = "/v1/apps/{app}/deployments/{id}/output"
DEPLOYMENT_EVENTS = "/v1/apps/{app}/deployments/{id}/events"
HEALTHZ = "/healthz"
READYZ = "/readyz"
METRICS = "/metrics"
OPENAPI = "/v1/openapi.json"

# A resumable upload's id in its URL: 16 random bytes, hex.
UPLOAD_ID_REGEX = "[0-9a-f]{32}"


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by its value, percent-encoded as one segment."""
    return template.format_map({name: quote(value, safe="") for name, value in values.items()})
