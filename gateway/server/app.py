"""The application factory: collaborators, handler objects, middlewares and routes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.config import Config
from gateway.ids import SOURCE_ID_REGEX
from gateway.server import keys
from gateway.server.adapters.connections import Connections
from gateway.server.adapters.forwarders import ConfiguredForwarder
from gateway.server.adapters.lifecycle import ensure_lifecycle
from gateway.server.adapters.s3 import S3Store
from gateway.server.domain.auth import Authenticator
from gateway.server.domain.deployments import ArchiveUrlChecker
from gateway.server.domain.signing import Clock, UrlSigner
from gateway.server.domain.uploads import BufferBudget, Uploader
from gateway.server.domain.urlguard import Resolver, UrlGuard, UrlPolicy, system_resolver
from gateway.server.http.cors import Cors
from gateway.server.http.deployments import DeploymentHandlers
from gateway.server.http.expect import UnmetExpectations, continue_at_once, defer_continue
from gateway.server.http.middleware import add_request_id, observe, render_errors
from gateway.server.http.openapi import OPENAPI_PATH, openapi_handler
from gateway.server.http.probes import Probes, ReadinessCheck
from gateway.server.http.sources import SourceHandlers
from gateway.server.observability.access import ClientAddress, count_streamed_bytes
from gateway.server.observability.metrics import ActiveRequests, Metrics

log = logging.getLogger(__name__)

SOURCE_PATH = f"/v1/sources/{{id:{SOURCE_ID_REGEX}}}"
DEPLOYMENTS_PATH = "/v1/apps/{app}/deployments"


def connections_context(
    connections: Connections, forwarder: ConfiguredForwarder, config: Config
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Opens the outbound connections and the forwarder while the app runs, and makes sure of
    the bucket's lifecycle rule once they are open."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with connections.open():
            if config.storage.ensure_lifecycle:
                await _ensure_lifecycle(connections.s3, config)
            async with forwarder.open():
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


def archive_url_checker(
    config: Config, signer: UrlSigner, store: S3Store, resolver: Resolver
) -> ArchiveUrlChecker:
    deployments = config.deployments
    guard = UrlGuard(
        UrlPolicy.of(deployments.allowed_hosts, deployments.allowed_http_hosts), resolver
    )
    return ArchiveUrlChecker(
        config.server.public_url,
        signer,
        store,
        config.storage.prefix,
        deployments.fetch_url_ttl_seconds,
        guard,
    )


def create_app(
    config: Config, *, clock: Clock = time.time, resolver: Resolver = system_resolver
) -> web.Application:
    """Build the gateway for ``config``. Reads no files and no globals; ``clock`` and
    ``resolver`` (DNS for deployment URLs) are for tests."""
    metrics = Metrics()
    active = ActiveRequests()
    budget = BufferBudget(config.sources.max_buffer_bytes)
    metrics.buffer_bytes.set_function(lambda: budget.in_use)
    signer = UrlSigner(config.signing.secret_keys, config.sources.ttl_seconds, clock)
    auth = Authenticator(config.auth.tokens)
    connections = Connections(config.storage)
    store = S3Store(
        connections, config.storage, on_error=lambda op: metrics.s3_errors.labels(op).inc()
    )
    uploader = Uploader(
        store,
        part_size=config.sources.part_size_bytes,
        max_size=config.sources.max_size_bytes,
        budget=budget,
    )
    forwarder = ConfiguredForwarder(config, connections)
    archive_urls = archive_url_checker(config, signer, store, resolver)
    sources = SourceHandlers(config, auth, signer, store, uploader, metrics)
    deploys = DeploymentHandlers(auth, signer, archive_urls, forwarder, metrics)
    probes = Probes(ReadinessCheck(store.check, clock), active, metrics, config.metrics.token)

    cors = Cors(config.cors.allowed_origins, config.cors.max_age)
    middlewares: list[Middleware] = [
        observe(metrics, active, ClientAddress(config.server.trusted_proxies)),
        render_errors,
    ]
    if cors.enabled:
        # Innermost: a preflight is answered (and a refusal rendered) like any other request.
        middlewares.append(cors.middleware)
    app = web.Application(middlewares=middlewares)
    # Shared state aiohttp's runner and the tests reach; handlers get their collaborators above.
    app[keys.METRICS] = metrics
    app[keys.ACTIVE_REQUESTS] = active
    app[keys.BUDGET] = budget
    app[keys.STORE] = store
    app.cleanup_ctx.append(connections_context(connections, forwarder, config))
    app.on_response_prepare.append(add_request_id)
    app.on_response_prepare.append(count_streamed_bytes)
    if cors.enabled:
        app.on_response_prepare.append(cors.on_response_prepare)
    app.on_shutdown.append(probes.on_shutdown)

    add_routes(app, config, sources, deploys, probes)
    return app


def add_routes(
    app: web.Application,
    config: Config,
    sources: SourceHandlers,
    deploys: DeploymentHandlers,
    probes: Probes,
) -> None:
    # Every route answers an unknown Expect through the middlewares (gateway.server.http.expect).
    router = app.router
    router.add_post("/v1/sources", sources.create, expect_handler=continue_at_once)
    router.add_put(SOURCE_PATH, sources.upload, expect_handler=defer_continue)
    router.add_get(SOURCE_PATH, sources.download, expect_handler=continue_at_once)
    router.add_post(DEPLOYMENTS_PATH, deploys.create, expect_handler=continue_at_once)
    router.add_get("/healthz", probes.healthz, expect_handler=continue_at_once)
    router.add_get("/readyz", probes.readyz, expect_handler=continue_at_once)
    if config.metrics.enabled:
        router.add_get("/metrics", probes.metrics, expect_handler=continue_at_once)
    router.add_get(OPENAPI_PATH, openapi_handler(config), expect_handler=continue_at_once)
    router.register_resource(UnmetExpectations())  # last: only what no route matched
