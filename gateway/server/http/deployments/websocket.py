"""The deployments stream, a WebSocket at ``GET /v1/apps/{app}/deployments/stream``, as the
platform's own clients use it: no credential in the handshake, a first text frame
``{"type": "auth", "data": {"token"}}``, then one JSON object per text frame for every deployment
of the app (``new``, ``log``, ``status``) and a ``ping`` every 15 s. Rendered from the instance's
follow core (``gateway.server.domain.deployments.follow``), like the server-sent events."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from prometheus_client import Gauge

from gateway.errors import GatewayError, ServiceUnavailable
from gateway.server.domain.auth import Authenticator, Principal
from gateway.server.domain.deployments.follow import AppFollower, FollowHub, Item
from gateway.server.domain.deployments.request import app_name_errors
from gateway.server.http.streams import start_stream
from gateway.server.observability.access import tally_of
from gateway.server.observability.metrics import PlatformMetrics

log = logging.getLogger(__name__)

# The auth frame is a few hundred bytes; anything past this is not one.
MAX_AUTH_FRAME = 64 * 1024
# What aiohttp buffers of one incoming message at most (it closes with 1009 beyond): above
# MAX_AUTH_FRAME so that an oversized auth frame is refused as a policy violation (1008).
MAX_INCOMING_MESSAGE = 1024 * 1024
PING_SECONDS = 15.0


class StreamRefused(Exception):
    """The first frame did not authenticate: closed with 1008, ``reason`` for the metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def frame(item: Item, view: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """The platform's frame for one item: ``new`` with the whole deployment object, ``log`` and
    ``status`` with the deployment's id (a string, as the Go client decodes it)."""
    if item.kind == "new":
        return {"type": "new", "id": item.deployment_id, "data": {"deployment": view(item.value)}}
    event = item.value
    if event["type"] == "status":
        data = {"status": event["status"]}
    else:
        data = {"content": event["content"]}
    return {"type": event["type"], "id": item.deployment_id, "data": data}


class DeploymentsStream:
    """The WebSocket handler; at most ``max_streams`` at once on this instance."""

    def __init__(
        self,
        auth: Authenticator,
        hub: FollowHub,
        view: Callable[[Any], dict[str, Any]],
        metrics: PlatformMetrics,
        followers: Gauge,
        *,
        auth_timeout: float,
        send_timeout: float,
        max_streams: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._auth = auth
        self._hub = hub
        self._view = view
        self._metrics = metrics
        self._followers = followers
        self._auth_timeout = auth_timeout
        self._send_timeout = send_timeout
        self._max_streams = max_streams
        self._clock = clock
        self.open = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.open >= self._max_streams:
            raise ServiceUnavailable("too many deployment streams on this instance", retry_after=5)
        app = request.match_info["app"]
        # Any Origin: nothing ambient (no cookie) authenticates the handshake.
        ws = web.WebSocketResponse(max_msg_size=MAX_INCOMING_MESSAGE, autoping=True)
        await start_stream(request, ws)
        self.open += 1
        self._followers.inc()
        try:
            if await self._admitted(request, ws, app):
                await self._serve(request, ws, app)
        finally:
            self.open -= 1
            self._followers.dec()
        return ws

    async def _admitted(self, request: web.Request, ws: web.WebSocketResponse, app: str) -> bool:
        """True when the first frame authenticates for ``app``; else closed with 1008."""
        try:
            principal = await self._authenticate(ws, app)
            principal.require_app(app)
            return True
        except StreamRefused as exc:
            reason, message = exc.reason, str(exc)
        except GatewayError as exc:
            reason = "forbidden" if exc.status == 403 else "bad_token"
            # The same words whether or not the app has deployments: nothing is looked up.
            message = exc.message
        self._metrics.stream_auth_failures.labels(reason).inc()
        tally_of(request).outcome = f"refused_{reason}"
        await self._close(ws, WSCloseCode.POLICY_VIOLATION, message)
        return False

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse, app: str) -> None:
        tally = tally_of(request)
        try:
            async with self._hub.app(app) as follower:
                if not await self._relay(ws, follower):
                    tally.outcome = "client_disconnected"
                    return
            # Graceful shutdown: what was found is sent, then "going away".
            await self._close(ws, WSCloseCode.GOING_AWAY, "server shutting down")
        except TimeoutError:
            tally.outcome = "send_timeout"
            log.warning(
                "deployments stream of %s dropped: it took nothing for %gs",
                app,
                self._send_timeout,
            )
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            tally.outcome = "client_disconnected"

    async def _authenticate(self, ws: web.WebSocketResponse, app: str) -> Principal:
        """The principal of the first frame, or ``StreamRefused``/``GatewayError``."""
        try:
            message = await ws.receive(timeout=self._auth_timeout)
        except TimeoutError:
            raise StreamRefused("timeout", "no auth frame in time") from None
        if message.type != WSMsgType.TEXT:
            raise StreamRefused("not_auth", "the first frame must be a text auth frame")
        text: str = message.data
        if len(text.encode()) > MAX_AUTH_FRAME:
            raise StreamRefused("too_large", "the auth frame is too large")
        try:
            data = json.loads(text)
        except ValueError:
            raise StreamRefused("not_json", "the auth frame must be JSON") from None
        token = _auth_token(data)
        if token is None:
            raise StreamRefused("not_auth", 'the first frame must be {"type": "auth", ...}')
        if app_name_errors(app):
            raise StreamRefused("forbidden", "not a valid app name")
        return await self._auth.authenticate_token(token)

    async def _relay(self, ws: web.WebSocketResponse, follower: AppFollower) -> bool:
        """Every item for the follower and a ping every 15 s until the instance stops (True) or
        the client goes (False). Its frames (pongs, a close) are read by aiohttp meanwhile."""
        reader = asyncio.ensure_future(_drain(ws))
        try:
            last = self._clock()
            while not self._hub.stopping.is_set():
                waiting = asyncio.ensure_future(follower.next_items(PING_SECONDS))
                await asyncio.wait({waiting, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    waiting.cancel()
                    return False
                items = waiting.result()
                for item in items:
                    await self._send(ws, frame(item, self._view))
                if items:
                    last = self._clock()
                elif self._clock() - last >= PING_SECONDS:
                    await self._send(ws, {"type": "ping", "data": {"ts": int(self._clock())}})
                    last = self._clock()
            # In-flight items are sent before a shutdown's close.
            for item in await follower.next_items(0):
                await self._send(ws, frame(item, self._view))
            return True
        finally:
            reader.cancel()

    async def _send(self, ws: web.WebSocketResponse, value: dict[str, Any]) -> None:
        """One frame; ``TimeoutError`` when the client took nothing for ``send_timeout``."""
        if ws.closed:
            raise ConnectionResetError
        async with asyncio.timeout(self._send_timeout):
            await ws.send_str(json.dumps(value, separators=(",", ":")))

    async def _close(self, ws: web.WebSocketResponse, code: int, message: str) -> None:
        try:
            async with asyncio.timeout(self._send_timeout):
                await ws.close(code=code, message=message.encode()[:120])
        except (TimeoutError, ConnectionError):
            pass


def _auth_token(data: Any) -> str | None:
    if not isinstance(data, dict) or data.get("type") != "auth":
        return None
    inner = data.get("data")
    token = inner.get("token") if isinstance(inner, dict) else None
    return token if isinstance(token, str) and token else None


async def _drain(ws: web.WebSocketResponse) -> None:
    """Reads (and ignores) what the client sends after its auth frame, until it closes."""
    async for _ in ws:
        pass
