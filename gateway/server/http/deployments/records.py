"""HTTP handlers for following deployments: show, list, output, the live event stream, and the
deployer's event reports. Thin: they check who asks, call the tracker and shape the answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from gateway.errors import DeploymentNotFound, TokenExpired, TokenInvalid
from gateway.ids import DEPLOYMENT_ID
from gateway.paths import DEPLOYMENT_EVENTS, DEPLOYMENT_OUTPUT, fill
from gateway.server.domain.auth import Authenticator
from gateway.server.domain.deployments.event_log import LoggedEvent
from gateway.server.domain.deployments.events_token import EventsTokens
from gateway.server.domain.deployments.follow import FollowHub
from gateway.server.domain.deployments.records import (
    MAX_EVENT_CONTENT,
    Record,
    deployment_view,
    is_terminal,
    pagination,
    parse_event,
    parse_last_event_id,
    parse_page,
    sse_message,
)
from gateway.server.domain.deployments.request import app_name_errors
from gateway.server.domain.deployments.tracker import DeploymentTracker
from gateway.server.domain.sources import rfc3339
from gateway.server.http.body import CLIENT_GONE, read_json_object
from gateway.server.http.streams import ClientStalled, cut_short, send_within, start_stream
from gateway.server.observability.access import tally_of
from gateway.server.observability.metrics import DeploymentMetrics

log = logging.getLogger(__name__)

# An event's body: 64 KiB of content, which JSON escaping may make up to six times longer.
MAX_EVENT_BODY = 6 * MAX_EVENT_CONTENT + 1024
# A comment line this often keeps proxies and clients from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


class DeploymentLinks:
    """The URLs a deployment's answers and jobs carry, on the gateway's public URL."""

    def __init__(self, public_url: str, tokens: EventsTokens) -> None:
        self._base = public_url.rstrip("/")
        self._tokens = tokens

    def output_url(self, app: str, deployment_id: str) -> str:
        return self._base + fill(DEPLOYMENT_OUTPUT, app=app, id=deployment_id)

    def events_url(self, app: str, deployment_id: str) -> str:
        """Where the deployer reports, with a token for this deployment only."""
        token = self._tokens.sign(app, deployment_id)
        return f"{self._base}{fill(DEPLOYMENT_EVENTS, app=app, id=deployment_id)}?token={token}"

    def view(self, record: Record) -> dict[str, Any]:
        """The platform's deployment object for ``record``."""
        deployment = record["deployment"]
        return deployment_view(record, self.output_url(deployment["app_id"], deployment["id"]))


class _ClientLeft(Exception):
    """The follower closed its connection (seen between two looks at the bucket)."""


def _path_ids(request: web.Request) -> tuple[str, str]:
    app, deployment_id = request.match_info["app"], request.match_info["id"]
    if app_name_errors(app) or not DEPLOYMENT_ID.fullmatch(deployment_id):
        raise DeploymentNotFound()
    return app, deployment_id


class DeploymentRecordHandlers:
    """Reading deployments (API token, limited to the token's apps) and reporting on them
    (events token from the job's events_url)."""

    def __init__(
        self,
        auth: Authenticator,
        tracker: DeploymentTracker,
        tokens: EventsTokens,
        links: DeploymentLinks,
        metrics: DeploymentMetrics,
        poll_interval: float,
        send_timeout: float,
        stopping: asyncio.Event,
        clock: Callable[[], float] = time.time,
        replay_seconds: float = 3600,
    ) -> None:
        # The instance's one follow core, shared with the WebSocket stream.
        self.hub = FollowHub(tracker, poll_interval, replay_seconds, stopping, clock)
        self._auth = auth
        self.tracker = tracker
        self._tokens = tokens
        self.links = links
        self.metrics = metrics
        self._poll_interval = poll_interval
        self._send_timeout = send_timeout
        self._stopping = stopping
        self._clock = clock

    async def _allowed_app(self, request: web.Request) -> str:
        principal = await self._auth.authenticate(request.headers.get("Authorization"))
        app = request.match_info["app"]
        principal.require_app(app)
        return app

    async def show(self, request: web.Request) -> web.Response:
        await self._allowed_app(request)
        app, deployment_id = _path_ids(request)
        record = await self.tracker.get(app, deployment_id)
        return web.json_response({"deployment": self.links.view(record)})

    async def index(self, request: web.Request) -> web.Response:
        app = await self._allowed_app(request)
        page = parse_page(request.query)
        if app_name_errors(app):
            records: list[Record] = []
            total = 0
        else:
            records, total = await self.tracker.page(app, page)
        return web.json_response(
            {
                "deployments": [self.links.view(record) for record in records],
                "meta": {"pagination": pagination(page, total)},
            }
        )

    async def output(self, request: web.Request) -> web.Response:
        await self._allowed_app(request)
        app, deployment_id = _path_ids(request)
        await self.tracker.get(app, deployment_id)  # 404 for an unknown one, even without events
        text = await self.tracker.output(app, deployment_id)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: everything after Last-Event-ID, then new events as they are
        stored, until a final status (or this instance shuts down). Once the headers are out,
        a failure closes the connection (the body cannot carry an error any more); the
        follower reconnects with Last-Event-ID."""
        await self._allowed_app(request)
        app, deployment_id = _path_ids(request)
        record = await self.tracker.get(app, deployment_id)
        after = parse_last_event_id(request.headers.get("Last-Event-ID"))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass events on as they come
            }
        )
        await start_stream(request, response)
        self.metrics.followers.labels("sse").inc()
        tally = tally_of(request)
        try:
            await self._stream(request, response, record, after)
            await response.write_eof()
        except (*CLIENT_GONE, _ClientLeft):
            tally.outcome = "client_disconnected"
        except ClientStalled:
            tally.outcome = "send_timeout"
            log.warning(
                "follower of deployment %s dropped: it took nothing for %gs",
                deployment_id,
                self._send_timeout,
            )
            cut_short(request, response, flush=False)
        except Exception as exc:
            tally.outcome = "upstream_failed"
            log.warning(
                "event stream of deployment %s ended: %s", deployment_id, type(exc).__name__
            )
            cut_short(request, response, flush=True)
        finally:
            self.metrics.followers.labels("sse").dec()
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        record: Record,
        after: int,
    ) -> None:
        # The instance's shared feed of the deployment: one look per interval for all followers.
        batches = self.hub.follow(record, after)
        async with contextlib.aclosing(batches):
            await self._relay(request, response, batches)
        if self._stopping.is_set():
            # EventSource clients reconnect by themselves; curl users see why the stream ended.
            await send_within(
                response,
                b": server shutting down; reconnect with Last-Event-ID\n\n",
                self._send_timeout,
            )

    async def _relay(
        self,
        request: web.Request,
        response: web.StreamResponse,
        batches: AsyncIterator[list[LoggedEvent]],
    ) -> None:
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while True:
            # Each look at the bucket is for someone: a follower gone (before its first write,
            # or between two) costs no more requests.
            if request.transport is None or request.transport.is_closing():
                raise _ClientLeft
            batch = await anext(batches, None)
            if batch is None:
                return
            for event in batch:
                await send_within(
                    response, sse_message(event.slot, event.shown), self._send_timeout
                )
            if batch:
                last_write = loop.time()
            elif loop.time() - last_write >= KEEPALIVE_SECONDS:
                await send_within(response, b": keep-alive\n\n", self._send_timeout)
                last_write = loop.time()

    async def post_event(self, request: web.Request) -> web.Response:
        """One event from the deployer: 200 ``{"id"}`` when stored (or already stored)."""
        app, deployment_id = request.match_info["app"], request.match_info["id"]
        try:
            self._tokens.verify(app, deployment_id, request.query.get("token"))
        except (TokenInvalid, TokenExpired):
            log.info("events for deployment %s refused: bad token", deployment_id[:64])
            raise
        data = await read_json_object(request, allow_empty=False, limit=MAX_EVENT_BODY)
        event = parse_event(data)
        fresh = await self.tracker.add_event(app, deployment_id, event, rfc3339(self._clock()))
        if fresh:
            self.metrics.events.labels(event.type).inc()
            if event.status is not None and is_terminal(event.status):
                self.metrics.finished.labels(event.status).inc()
                log.info("deployment %s of %s finished: %s", deployment_id, app, event.status)
        return web.json_response({"id": event.id})
