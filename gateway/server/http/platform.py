"""What the platform's own clients (its Go CLI and client library, its npm package) call besides
the deployments endpoints: the token exchange, who the token is, the regions, and the app with
the address of its deployments stream. Thin: authenticate, shape the platform's objects."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from gateway.config import Config, TokenConfig
from gateway.errors import NotFound, Unauthorized
from gateway.paths import DEPLOYMENTS_STREAM, fill
from gateway.server.domain.auth import Authenticator, Principal, presented_token
from gateway.server.domain.deployments.request import app_name_errors
from gateway.server.domain.exchange import ExchangedTokens
from gateway.server.observability.metrics import PlatformMetrics

log = logging.getLogger(__name__)

# The one region the gateway answers as: the CLI picks a region before any regional command.
REGION_NAME = "sources-gateway"


def stream_url(public_url: str, app: str) -> str:
    """``links.deployments_stream``: the public URL with ws (wss for https) as its scheme."""
    parts = urlsplit(public_url.rstrip("/"))
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path + fill(DEPLOYMENTS_STREAM, app=app)
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def user_object(principal: Principal, token: TokenConfig | None) -> dict[str, Any]:
    """The platform's user object for a token: its name is its id and username."""
    return {
        "id": principal.name,
        "username": principal.name,
        "email": (token.email if token else None) or "",
        "fullname": (token.fullname if token else None) or "",
    }


class PlatformHandlers:
    """``POST /v1/tokens/exchange``, ``GET /v1/users/self``, ``GET /v1/regions`` and
    ``GET /v1/apps/{app}``."""

    def __init__(
        self,
        config: Config,
        auth: Authenticator,
        exchanged: ExchangedTokens,
        metrics: PlatformMetrics,
    ) -> None:
        self._public_url = config.server.base_url
        self._tokens: Mapping[str, TokenConfig] = {t.name: t for t in config.auth.tokens}
        self._auth = auth
        self._exchanged = exchanged
        self._metrics = metrics

    async def exchange(self, request: web.Request) -> web.Response:
        """A JWT for an API token (Basic, empty user, the token as password): only an API token
        is exchanged, never a JWT, so a JWT cannot be renewed past its token's removal."""
        token = presented_token(request.headers.get("Authorization"))
        principal = self._auth.api_token(token) if token else None
        if principal is None:
            self._metrics.exchanges.labels("refused").inc()
            raise Unauthorized("invalid API token: send it as the password of HTTP Basic auth")
        self._metrics.exchanges.labels("issued").inc()
        log.info("token %r exchanged for a JWT", principal.name)
        return web.json_response({"token": self._exchanged.issue(principal)})

    async def users_self(self, request: web.Request) -> web.Response:
        principal = await self._auth.authenticate(request.headers.get("Authorization"))
        user = user_object(principal, self._tokens.get(principal.name))
        return web.json_response({"user": user})

    async def regions(self, request: web.Request) -> web.Response:
        """The platform's CLI lists regions before every regional command and uses the default
        one's URLs unless its environment names them: one region, this gateway."""
        await self._auth.authenticate(request.headers.get("Authorization"))
        region = {
            "name": REGION_NAME,
            "display_name": "sources-gateway",
            "api": self._public_url,
            "database_api": self._public_url,
            "dashboard": self._public_url,
            "ssh": "",
            "default": True,
        }
        return web.json_response({"regions": [region]})

    async def app(self, request: web.Request) -> web.Response:
        """The app object: the gateway has no app registry, so an app exists for a token that
        may deploy it; 404 in the platform's shape for a name no app can have."""
        principal = await self._auth.authenticate(request.headers.get("Authorization"))
        name = request.match_info["app"]
        if app_name_errors(name):
            raise NotFound("app")
        principal.require_app(name)
        app = {
            "id": name,
            "name": name,
            # No registry, so no creation time to tell.
            "created_at": None,
            "links": {"deployments_stream": stream_url(self._public_url, name)},
        }
        return web.json_response({"app": app})
