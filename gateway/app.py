"""The application factory: collaborators, middlewares and routes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from . import keys
from .auth import Authenticator
from .config import Config
from .cors import Cors
from .deployments import create_deployment
from .errors import GatewayError, json_response, render, render_http_exception
from .forwarders import open_forwarder
from .health import Probes, ReadinessCheck
from .lifecycle import ensure_lifecycle
from .observability import (
    OUTCOME,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    ClientAddress,
    InFlight,
    Metrics,
    bytes_sent,
    count_streamed_bytes,
    log_access,
    request_id_for,
    route_name,
)
from .openapi import OPENAPI_PATH, openapi_handler
from .signing import Clock, UrlSigner
from .sources import CLIENT_GONE, create_source, defer_continue, download_source, upload_source
from .storage import S3Store, open_s3_client
from .uploads import BufferBudget, Uploader
from .urlguard import Resolver, UrlGuard, UrlPolicy, system_resolver

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SOURCE_PATH = "/v1/sources/{id:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}}"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request id, one access log line and the request metrics, whatever happens."""
    started = time.monotonic()
    request[REQUEST_ID] = request_id_for(request)
    inflight = request.app[keys.INFLIGHT]
    inflight.begin()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        if inflight.draining and not response.prepared:
            # Shutting down: no further requests on this connection ("Connection: close").
            response.force_close()
        return response
    except CLIENT_GONE:
        status = 499  # nginx's "client closed request": not a server error
        request[OUTCOME] = request.get(OUTCOME) or "client_disconnected"
        raise
    except asyncio.CancelledError:
        # The server gave up on the request (shutdown_timeout ran out): not a bug, not the client.
        status = 503
        request[OUTCOME] = request.get(OUTCOME) or "cancelled"
        raise
    finally:
        try:
            metrics = request.app[keys.METRICS]
            route = route_name(request)
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(request.method, route).observe(time.monotonic() - started)
            client = request.app[keys.CLIENT_ADDRESS].of(request)
            log_access(request, status, bytes_sent(request, response), started, client)
        finally:
            inflight.end()


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the platform's JSON error shapes; no trace ever reaches a client."""
    try:
        response: web.StreamResponse = await handler(request)
    except GatewayError as exc:
        response = render(exc)
    except web.HTTPException as exc:
        response = render_http_exception(exc)
    except (asyncio.CancelledError, *CLIENT_GONE):
        raise
    except Exception:
        log.exception("unhandled error", extra={"request_id": request.get(REQUEST_ID)})
        response = json_response(500, {"error": "internal server error"})
    if request.body_exists and not request.content.is_eof() and not response.prepared:
        # The body was refused unread: close rather than read (or wait for) what is left.
        response.force_close()
    return response


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID) or request_id_for(request)
    response.headers[REQUEST_ID_HEADER] = request_id


def storage_context(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with (
            aiohttp.ClientSession(connector=connector, auto_decompress=False) as http,
            open_s3_client(config.storage) as s3,
        ):
            metrics = app[keys.METRICS]
            store = S3Store(
                s3, http, config.storage, on_error=lambda op: metrics.s3_errors.labels(op).inc()
            )
            if config.storage.ensure_lifecycle:
                await _ensure_lifecycle(s3, config)
            app[keys.HTTP] = http
            app[keys.S3_CLIENT] = s3
            app[keys.STORE] = store
            app[keys.UPLOADER] = Uploader(
                store,
                part_size=config.sources.part_size_bytes,
                max_size=config.sources.max_size_bytes,
                budget=app[keys.BUDGET],
            )
            yield

    return context


async def _ensure_lifecycle(s3: object, config: Config) -> None:
    # A missing permission must not keep the gateway from serving: it says so and goes on.
    try:
        await ensure_lifecycle(s3, config.storage)
    except Exception as exc:
        log.error(
            "could not ensure the lifecycle rule on bucket %s (%s); uploads will not expire "
            "unless the bucket has a rule: see deploy/lifecycle.json",
            config.storage.bucket,
            exc,
        )


def forwarder_context(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    """The deployments forwarder (and its SQS client); after storage_context, whose session the
    http forwarder uses."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with open_forwarder(config, app[keys.HTTP]) as forwarder:
            app[keys.FORWARDER] = forwarder
            yield

    return context


def create_app(
    config: Config, *, clock: Clock = time.time, resolver: Resolver = system_resolver
) -> web.Application:
    """Build the gateway for ``config``. Reads no files and no globals; ``clock`` and
    ``resolver`` (DNS for deployment URLs) are for tests."""
    cors = Cors(config.cors.allowed_origins, config.cors.max_age)
    middlewares: list[Middleware] = [observe, render_errors]
    if cors.enabled:
        # Innermost: a preflight is answered (and a refusal rendered) like any other request.
        middlewares.append(cors.middleware)
    app = web.Application(middlewares=middlewares)
    app[keys.CONFIG] = config
    app[keys.SIGNER] = UrlSigner(config.signing.secret_keys, config.sources.ttl_seconds, clock)
    app[keys.AUTH] = Authenticator(config.auth.tokens)
    app[keys.METRICS] = Metrics()
    budget = app[keys.BUDGET] = BufferBudget(config.sources.max_buffer_bytes)
    app[keys.METRICS].buffer_bytes.set_function(lambda: budget.in_use)
    app[keys.CLIENT_ADDRESS] = ClientAddress(config.server.trusted_proxies)
    app[keys.INFLIGHT] = InFlight()
    deployments = config.deployments
    policy = UrlPolicy.of(deployments.allowed_hosts, deployments.allowed_http_hosts)
    app[keys.URL_GUARD] = UrlGuard(policy, resolver)
    app.cleanup_ctx.append(storage_context(config))
    app.cleanup_ctx.append(forwarder_context(config))
    app.on_response_prepare.append(add_request_id)
    app.on_response_prepare.append(count_streamed_bytes)
    if cors.enabled:
        app.on_response_prepare.append(cors.on_response_prepare)
    probes = Probes(
        ReadinessCheck(lambda: app[keys.STORE].check(), clock),
        app[keys.INFLIGHT],
        app[keys.METRICS],
        config.metrics.token,
    )
    app.on_shutdown.append(probes.on_shutdown)

    app.router.add_post("/v1/sources", create_source)
    app.router.add_put(SOURCE_PATH, upload_source, expect_handler=defer_continue)
    app.router.add_get(SOURCE_PATH, download_source)
    app.router.add_post("/v1/apps/{app}/deployments", create_deployment)
    app.router.add_get("/healthz", probes.healthz)
    app.router.add_get("/readyz", probes.readyz)
    if config.metrics.enabled:
        app.router.add_get("/metrics", probes.metrics)
    app.router.add_get(OPENAPI_PATH, openapi_handler(config))
    return app
