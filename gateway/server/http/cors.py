"""CORS for browser uploads and downloads: ``cors.allowed_origins``, empty (off) by default.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered 204 when
the origin is allowed and the path has a route for the requested method, so a page can ``PUT`` to
an ``upload_url``, ``GET`` a ``download_url`` and ``POST`` to the API. Every other response to an
allowed origin carries ``Access-Control-Allow-Origin`` and exposes the headers a client reads
(``ETag``, ``X-Request-ID``, checksums, ranges). No credentials mode: API tokens travel in an
explicit ``Authorization`` header and source tokens in the URL, never in cookies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway.errors import Forbidden
from gateway.server.http.archive_headers import HEADERS as ARCHIVE_HEADERS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What tus clients (tus-js-client, Uppy) and the IETF draft's send and read.
RESUMABLE_REQUEST_HEADERS = (
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Offset",
    "Upload-Checksum",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Draft-Interop-Version",
    "Content-Digest",
    "Repr-Digest",
)
RESUMABLE_RESPONSE_HEADERS = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "Upload-Limit",
    "Upload-Complete",
    "Upload-Incomplete",
    "Upload-Draft-Interop-Version",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
)
# Request headers a browser client may set: auth, upload metadata, conditional and ranged reads.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Content-MD5",
    "X-Request-ID",
    "Range",
    "If-None-Match",
    "If-Range",
    *RESUMABLE_REQUEST_HEADERS,
)
# Response headers a script may read besides the CORS-safelisted ones.
EXPOSED_HEADERS = (
    "ETag",
    "X-Request-ID",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "X-Checksum-Sha256",
    "Repr-Digest",
    *ARCHIVE_HEADERS,
    "Content-Disposition",
    "X-Content-Type-Options",
    "Retry-After",
    "WWW-Authenticate",
    # 429 answers (auth.limits): the IETF draft's fields, so a page can pace itself.
    "RateLimit-Policy",
    "RateLimit",
    *RESUMABLE_RESPONSE_HEADERS,
)
_ALLOWED_ORIGIN = web.RequestKey("cors_allowed_origin", str)


class Cors:
    """The CORS policy of one application: a middleware and an ``on_response_prepare`` hook."""

    def __init__(self, allowed_origins: Sequence[str], max_age: int) -> None:
        self._any = "*" in allowed_origins
        self._origins = frozenset(o.rstrip("/") for o in allowed_origins if o != "*")
        self._max_age = max_age

    @property
    def enabled(self) -> bool:
        return self._any or bool(self._origins)

    def _allowed(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``, or None if it is refused."""
        if self._any:
            return "*"
        return origin if origin in self._origins else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        allowed = self._allowed(origin)
        requested = request.headers.get("Access-Control-Request-Method")
        if request.method == "OPTIONS" and requested is not None:
            return self._preflight(request, allowed, requested.upper())
        if allowed is not None:
            request[_ALLOWED_ORIGIN] = allowed
        return await handler(request)

    def _preflight(
        self, request: web.Request, allowed: str | None, requested: str
    ) -> web.StreamResponse:
        if allowed is None:
            raise Forbidden("origin not allowed")
        # No route answers OPTIONS, so the router resolved this to 405 (with the methods the
        # path does allow) or to 404; a preflight is only for a method the path has.
        exc = request.match_info.http_exception
        methods: set[str] = set()
        if isinstance(exc, web.HTTPMethodNotAllowed):
            methods = set(exc.allowed_methods)
        elif exc is None:
            # The path has an OPTIONS route of its own (tus discovery): its resource's methods.
            resource = request.match_info.route.resource
            methods = {route.method for route in resource} if resource else {request.method}
        if requested not in methods:
            if exc is not None and exc.status == 404:
                raise exc
            raise Forbidden(f"method {requested} not allowed here")
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(self._max_age),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
        return web.Response(status=204, headers=headers)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the CORS headers to every response to an allowed origin, errors included."""
        allowed = request.get(_ALLOWED_ORIGIN)
        if allowed is None or "Access-Control-Allow-Origin" in response.headers:
            return
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        if allowed != "*":
            # The answer differs by Origin: caches must not hand one origin's copy to another.
            response.headers.add("Vary", "Origin")
