"""The application factory: collaborators, handler objects, middlewares and routes."""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, TextIO

from aiobotocore.session import AioSession
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.config import Config
from gateway.server import keys
from gateway.server.adapters.aws import sqs_client_kwargs
from gateway.server.adapters.deployments.demo_deployer import DemoDeployer, running
from gateway.server.adapters.deployments.event_log import EventLogStore
from gateway.server.adapters.deployments.forwarders import ConfiguredForwarder
from gateway.server.adapters.deployments.records import RecordStore
from gateway.server.adapters.json_objects import S3JsonObjects
from gateway.server.adapters.lifecycle import (
    abort_after_days,
    ensure_lifecycle,
    rules_besides_sources,
)
from gateway.server.adapters.outbound import Connections
from gateway.server.adapters.s3 import S3Store
from gateway.server.auth_wiring import authenticator, jwks_context
from gateway.server.domain.archive.check import ArchivePolicy
from gateway.server.domain.archive.pool import CheckPool
from gateway.server.domain.auth import Authenticator
from gateway.server.domain.deployments.event_log import CHUNK_EVENTS
from gateway.server.domain.deployments.events_token import EventsTokens
from gateway.server.domain.deployments.request import ArchiveUrlChecker
from gateway.server.domain.deployments.tracker import DeploymentTracker
from gateway.server.domain.exchange import ExchangedTokens
from gateway.server.domain.limits import UploadSlots
from gateway.server.domain.signing import Clock, UrlSigner
from gateway.server.domain.uploads import BufferBudget, Uploader
from gateway.server.domain.urlguard import Resolver, UrlGuard, UrlPolicy, system_resolver
from gateway.server.http.cors import Cors
from gateway.server.http.deployments.create import DeploymentHandlers
from gateway.server.http.deployments.records import DeploymentLinks, DeploymentRecordHandlers
from gateway.server.http.deployments.websocket import DeploymentsStream
from gateway.server.http.middleware import observe
from gateway.server.http.openapi import openapi_handler
from gateway.server.http.platform import PlatformHandlers
from gateway.server.http.probes import Probes
from gateway.server.http.sources import SourceHandlers
from gateway.server.observability.access import AccessLog, ClientAddress
from gateway.server.observability.dependencies import DependencyChecks
from gateway.server.observability.metrics import (
    ActiveRequests,
    DeploymentMetrics,
    Metrics,
    PlatformMetrics,
)
from gateway.server.observability.shared_metrics import SharedMetrics, Worker
from gateway.server.resumable_wiring import Resumable
from gateway.server.routing import Handlers, add_routes

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)


def connections_context(
    connections: Connections,
    forwarder: ConfiguredForwarder,
    dependencies: DependencyChecks,
    config: Config,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Opens the outbound connections and the forwarder while the app runs, makes sure of the
    bucket's lifecycle rule once they are open, and checks the dependencies in the background."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        async with connections.open():
            if config.storage.ensure_lifecycle:
                await _ensure_lifecycle(connections.s3, config)
            async with forwarder.open(), dependencies.running():
                yield

    return context


async def _ensure_lifecycle(s3: S3Client, config: Config) -> None:
    # A missing permission must not keep the gateway from serving: it says so and goes on.
    try:
        await ensure_lifecycle(
            s3, config.storage, rules_besides_sources(config), abort_after_days(config)
        )
    except Exception as exc:
        log.error(
            "could not ensure the lifecycle rules on bucket %s (%s); uploads and deployment "
            "records will not expire unless the bucket has rules: see deploy/lifecycle.json",
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


def deployment_record_handlers(
    config: Config,
    auth: Authenticator,
    connections: Connections,
    metrics: Metrics,
    active: ActiveRequests,
    clock: Clock,
) -> DeploymentRecordHandlers:
    deployments = config.deployments
    objects = S3JsonObjects(connections, config.storage.bucket)
    tracker = DeploymentTracker(
        RecordStore(objects, deployments.prefix),
        EventLogStore(objects, deployments.prefix, CHUNK_EVENTS),
        deployments.max_output_bytes,
    )
    tokens = EventsTokens(config.signing.secret_keys, deployments.events_ttl_seconds, clock)
    return DeploymentRecordHandlers(
        auth,
        tracker,
        tokens,
        DeploymentLinks(config.server.public_url, tokens),
        DeploymentMetrics(metrics.registry),
        deployments.poll_interval,
        config.server.send_timeout,
        active.drain_started,
        clock,
        replay_seconds=deployments.stream_replay_seconds,
    )


def demo_deployer_context(
    config: Config, connections: Connections
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The local stand-in deployer, reading the forward queue while the app runs."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        queue = config.deployments.forward.queue
        assert queue, "validated by ForwardConfig"
        async with (
            AioSession().create_client("sqs", **sqs_client_kwargs(config)) as sqs,
            running(DemoDeployer(sqs, queue, connections.http)),
        ):
            yield

    return context


def source_handlers(
    config: Config,
    auth: Authenticator,
    signer: UrlSigner,
    store: S3Store,
    uploader: Uploader,
    metrics: Metrics,
) -> SourceHandlers:
    uploads = config.auth.limits.concurrent_uploads
    slots = UploadSlots(uploads) if uploads else None
    return SourceHandlers(config, auth, signer, store, uploader, metrics, slots)


def dependency_checks(
    config: Config, store: S3Store, forwarder: ConfiguredForwarder, clock: Clock, metrics: Metrics
) -> DependencyChecks:
    """The bucket and the deployer, checked in the background (readiness reads the results)."""
    return DependencyChecks(
        [("storage", store.check), ("deployer", forwarder.check)],
        config.server.readiness_requires,
        config.server.readiness_interval,
        clock,
        metrics.dependency_up,
    )


def upload_core(config: Config, store: S3Store, budget: BufferBudget, pool: CheckPool) -> Uploader:
    sources = config.sources
    return Uploader(
        store,
        part_size=sources.part_size_bytes,
        max_size=sources.max_size_bytes,
        budget=budget,
        archive=ArchivePolicy.of(sources, pool),
    )


def observers(
    config: Config,
    metrics: Metrics,
    dependencies: DependencyChecks,
    active: ActiveRequests,
    access_stream: Callable[[], TextIO],
    worker: Worker | None,
) -> tuple[Probes, AccessLog, SharedMetrics | None]:
    """The probes, the access log and, in a worker process, the metrics it shares with the
    other workers (``/metrics`` then reports their sum)."""
    shared = SharedMetrics(metrics.registry, worker) if worker else None
    render = shared.render if shared else None
    probes = Probes(dependencies, active, metrics, config.metrics.token, render)
    access = AccessLog(
        enabled=config.logging.access_enabled,
        as_json=config.logging.json,
        stream=access_stream,
        worker=worker.index if worker else None,
    )
    return probes, access, shared


def create_app(
    config: Config,
    *,
    clock: Clock = time.time,
    resolver: Resolver = system_resolver,
    access_stream: Callable[[], TextIO] = lambda: sys.stderr,
    worker: Worker | None = None,
) -> web.Application:
    """Build the gateway for ``config``. Reads no files and no globals; ``clock``, ``resolver``
    (DNS for deployment URLs) and ``access_stream`` (where access lines go) are for tests;
    ``worker`` is set in a worker process of ``gateway serve --workers N``."""
    metrics = Metrics()
    active = ActiveRequests()
    budget = BufferBudget(config.sources.max_buffer_bytes, config.server.body_timeout)
    metrics.buffer_bytes.set_function(lambda: budget.in_use)
    signer = UrlSigner(config.signing.secret_keys, config.sources.ttl_seconds, clock)
    auth, exchanged, jwks = authenticator(config, metrics, clock)
    connections = Connections(config.storage)
    store = S3Store(
        connections, config.storage, on_error=lambda op: metrics.s3_errors.labels(op).inc()
    )
    check_pool = CheckPool(config.sources.archive_check_threads)
    uploader = upload_core(config, store, budget, check_pool)
    forwarder = ConfiguredForwarder(config, connections)
    archive_urls = archive_url_checker(config, signer, store, resolver)
    sources = source_handlers(config, auth, signer, store, uploader, metrics)
    resumable = Resumable(config, signer, connections, store, budget, metrics, clock, check_pool)
    records = deployment_record_handlers(config, auth, connections, metrics, active, clock)
    dependencies = dependency_checks(config, store, forwarder, clock, metrics)
    down = functools.partial(dependencies.failure, "deployer")
    deploys = DeploymentHandlers(auth, signer, archive_urls, forwarder, records, metrics, down)
    probes, access, shared = observers(config, metrics, dependencies, active, access_stream, worker)
    platform, stream = platform_handlers(config, auth, exchanged, records, metrics)

    cors = Cors(config.cors.allowed_origins, config.cors.max_age)
    app = web.Application(middlewares=middlewares(config, metrics, active, access, cors))
    # Shared state aiohttp's runner and the tests reach; handlers get their collaborators above.
    app[keys.METRICS] = metrics
    app[keys.ACTIVE_REQUESTS] = active
    app[keys.BUDGET] = budget
    app[keys.STORE] = store
    app[keys.ACCESS_LOG] = access
    app.cleanup_ctx.append(connections_context(connections, forwarder, dependencies, config))
    app.cleanup_ctx.append(resumable.probe_context)  # after the connections: it needs the bucket
    if jwks is not None:
        app.cleanup_ctx.append(jwks_context(jwks))
    if shared is not None:
        app.cleanup_ctx.append(shared.context)
    if cors.enabled:
        app.on_response_prepare.append(cors.on_response_prepare)
    app.on_shutdown.append(probes.on_shutdown)
    app.on_cleanup.append(close_access_log)
    app.on_cleanup.append(lambda _: _close_pool(check_pool))

    tus, draft, docs = resumable.tus, resumable.draft(config, sources), openapi_handler(config)
    handlers = Handlers(sources, tus, draft, deploys, records, platform, stream, probes, docs)
    add_routes(app.router, config, handlers)
    if config.deployments.demo_deployer:
        app.cleanup_ctx.append(demo_deployer_context(config, connections))
    return app


def middlewares(
    config: Config, metrics: Metrics, active: ActiveRequests, access: AccessLog, cors: Cors
) -> list[Middleware]:
    """Observation and error rendering outermost; CORS innermost, so a preflight is answered
    (and a refusal rendered) like any other request."""
    chain = [observe(metrics, active, ClientAddress(config.server.trusted_proxies), access)]
    if cors.enabled:
        chain.append(cors.middleware)
    return chain


async def close_access_log(app: web.Application) -> None:
    app[keys.ACCESS_LOG].close()


async def _close_pool(pool: CheckPool) -> None:
    pool.close()


def platform_handlers(
    config: Config,
    auth: Authenticator,
    exchanged: ExchangedTokens,
    records: DeploymentRecordHandlers,
    metrics: Metrics,
) -> tuple[PlatformHandlers, DeploymentsStream]:
    """The platform's auth API and app object, and the WebSocket stream, rendered from the
    same follow core as the event streams."""
    deployments = config.deployments
    platform_metrics = PlatformMetrics(metrics.registry)
    stream = DeploymentsStream(
        auth,
        records.hub,
        records.links.view,
        platform_metrics,
        records.metrics.followers.labels("websocket"),
        auth_timeout=deployments.stream_auth_timeout,
        send_timeout=config.server.send_timeout,
        max_streams=deployments.max_streams,
    )
    return PlatformHandlers(config, auth, exchanged, platform_metrics), stream
