"""The route table: every route the gateway serves, once. ``gateway.server.routing`` registers
them on the app (in this order) and ``gateway.server.http.openapi`` documents them (an operation
for each name); ``tests/test_routes.py`` checks that the two agree with the table.

``handler`` names the handler on ``gateway.server.routing.Handlers``; ``auth`` says what a request
must carry (and which OpenAPI ``security`` it gets); ``expect`` when ``100 Continue`` is sent: at
once, or once the credentials are accepted (``gateway.server.http.expect``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gateway import paths
from gateway.config import Config
from gateway.ids import SOURCE_ID_REGEX

Auth = Literal[
    "api",  # an API token or a JWT: Authorization Bearer, or Basic with the token as password
    "basic",  # HTTP Basic only, the API token as password (the token exchange)
    "source_url",  # the upload or download token of a source URL, in the query
    "upload_url",  # a resumable upload's resume token, in the query
    "events_url",  # the events token of a job's events_url, in the query
    "first_frame",  # a WebSocket: the credential comes in its first frame
    "metrics",  # metrics.token, when one is configured
    "none",
]
Expect = Literal["at_once", "after_credentials"]


def _always(config: Config) -> bool:
    return True


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # the template of gateway.paths
    handler: str  # the attribute path on gateway.server.routing.Handlers
    auth: Auth
    name: str  # the OpenAPI operationId
    expect: Expect = "at_once"
    # What a parameter matches, when not any one segment.
    patterns: tuple[tuple[str, str], ...] = ()
    enabled: Callable[[Config], bool] = field(default=_always, compare=False)

    @property
    def router_path(self) -> str:
        """The path as aiohttp's router takes it (``{id:<regex>}``)."""
        path = self.path
        for name, regex in self.patterns:
            path = path.replace(f"{{{name}}}", f"{{{name}:{regex}}}")
        return path


_SOURCE_ID = (("id", SOURCE_ID_REGEX),)
_UPLOAD_IDS = (*_SOURCE_ID, ("uid", paths.UPLOAD_ID_REGEX))
_AFTER: Expect = "after_credentials"


def _metrics_enabled(config: Config) -> bool:
    return config.metrics.enabled


# In registration order: aiohttp takes the first match, so the deployments stream comes before
# the deployment ``{id}`` that would take its path; a resource's methods are consecutive.
ROUTES: tuple[Route, ...] = (
    Route("POST", paths.SOURCES, "sources.create", "api", "createSource", _AFTER),
    # A PUT with the draft's headers creates a resumable upload; without, the plain upload.
    Route("PUT", paths.SOURCE, "draft.create", "source_url", "uploadSource", _AFTER, _SOURCE_ID),
    Route(
        "HEAD", paths.SOURCE, "sources.download", "source_url", "headSource", "at_once", _SOURCE_ID
    ),
    Route(
        "GET", paths.SOURCE, "sources.download", "source_url", "getSource", "at_once", _SOURCE_ID
    ),
    Route(
        "POST", paths.SOURCE, "on_source", "source_url", "createResumableUpload", _AFTER, _SOURCE_ID
    ),
    Route(
        "OPTIONS",
        paths.SOURCE,
        "tus.options",
        "none",
        "discoverResumableUploads",
        "at_once",
        _SOURCE_ID,
    ),
    Route(
        "HEAD", paths.UPLOAD, "upload_head", "upload_url", "getUploadOffset", _AFTER, _UPLOAD_IDS
    ),
    Route(
        "GET",
        paths.UPLOAD,
        "draft.offset",
        "upload_url",
        "getUploadOffsetByGet",
        _AFTER,
        _UPLOAD_IDS,
    ),
    Route(
        "PATCH", paths.UPLOAD, "upload_patch", "upload_url", "appendToUpload", _AFTER, _UPLOAD_IDS
    ),
    Route(
        "DELETE", paths.UPLOAD, "upload_delete", "upload_url", "cancelUpload", _AFTER, _UPLOAD_IDS
    ),
    Route("OPTIONS", paths.UPLOAD, "tus.options", "none", "discoverUpload", _AFTER, _UPLOAD_IDS),
    Route("POST", paths.DEPLOYMENTS, "deploys.create", "api", "createDeployment", _AFTER),
    Route("HEAD", paths.HEALTHZ, "probes.healthz", "none", "healthzHead"),
    Route("GET", paths.HEALTHZ, "probes.healthz", "none", "healthz"),
    Route("HEAD", paths.READYZ, "probes.readyz", "none", "readyzHead"),
    Route("GET", paths.READYZ, "probes.readyz", "none", "readyz"),
    Route(
        "HEAD", paths.METRICS, "probes.metrics", "metrics", "metricsHead", enabled=_metrics_enabled
    ),
    Route("GET", paths.METRICS, "probes.metrics", "metrics", "metrics", enabled=_metrics_enabled),
    Route("HEAD", paths.OPENAPI, "openapi", "none", "openapiHead"),
    Route("GET", paths.OPENAPI, "openapi", "none", "openapi"),
    # The platform's auth API, its app object and the deployments stream.
    Route("POST", paths.TOKENS_EXCHANGE, "platform.exchange", "basic", "exchangeToken", _AFTER),
    Route("GET", paths.DEPLOYMENTS_STREAM, "stream.handle", "first_frame", "streamDeployments"),
    Route("GET", paths.USERS_SELF, "platform.users_self", "api", "usersSelf"),
    Route("GET", paths.REGIONS, "platform.regions", "api", "listRegions"),
    Route("GET", paths.APP, "platform.app", "api", "getApp"),
    # No HEAD: an event stream has no length to describe, and the rest are cheap to GET.
    Route("GET", paths.DEPLOYMENTS, "records.index", "api", "listDeployments"),
    Route("GET", paths.DEPLOYMENT, "records.show", "api", "getDeployment"),
    Route("GET", paths.DEPLOYMENT_OUTPUT, "records.output", "api", "getDeploymentOutput"),
    Route("GET", paths.DEPLOYMENT_EVENTS, "records.events", "api", "followDeployment"),
    Route(
        "POST",
        paths.DEPLOYMENT_EVENTS,
        "records.post_event",
        "events_url",
        "postDeploymentEvent",
        _AFTER,
    ),
)


def routes_of(config: Config) -> list[Route]:
    """The routes a gateway running ``config`` serves, in registration order."""
    return [route for route in ROUTES if route.enabled(config)]
