"""Following a deployment from the command line: its event stream, shown as it comes.

Output lines go to stderr as they arrive and statuses as short ``-----> status`` lines, so stdout
stays for the JSON answer. A stream that ends before a final status (the instance it was on shut
down, the connection broke) is picked up again with ``Last-Event-ID``, as a browser's
EventSource does, after a pause that doubles each time nothing new came (1 s, 2 s, ... 10 s),
with a line saying so; after ``MAX_RECONNECTS`` such attempts in a row following gives up with
``FollowLost`` (its own exit code: the deployment may well still be running). While the
deployment is queued, or a reconnection waits, a terminal shows what is awaited and for how long.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import shlex
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import IO, Any

import aiohttp

from gateway.client.errors import (
    EXIT_FOLLOW_LOST,
    CliError,
    Interrupted,
    error_from,
    network_errors,
    safe_url,
)
from gateway.client.output import Reporter, Waiting, progress_allowed
from gateway.paths import DEPLOYMENT, DEPLOYMENT_EVENTS, fill
from gateway.retry import RetryPolicy
from gateway.statuses import TERMINAL_STATUSES

# Output lines kept to show again when a deployment fails.
TAIL_LINES = 10
# Streams in a row that end with no news before following gives up, and the pauses before each
# new attempt: the first, doubled each time, at most the last (1+2+4+8+10: about 25 s in all),
# with no jitter (the pause is shown as it is). The count starts again after news came.
MAX_RECONNECTS = 5
FIRST_PAUSE = 1.0
MAX_PAUSE = 10.0
# The deployment's record takes its final status just after the event that says it is in the
# log: read again (6 reads over about 3 s at most) until it shows the status the stream ended with.
RECORD_LAG = RetryPolicy(attempts=6, base_delay=0.1, max_delay=1.0)
# A stream is quiet between events but for a keep-alive every 15 s: silence for longer means the
# connection is gone.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)


@dataclass(frozen=True)
class ServerEvent:
    id: str | None
    event: str
    data: str


async def server_events(lines: AsyncIterable[bytes]) -> AsyncIterator[ServerEvent]:
    """Parse a ``text/event-stream`` body (WHATWG rules: ``field: value`` lines, ``:`` comments,
    a blank line ends an event) into events."""
    event_id: str | None = None
    kind = "message"
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield ServerEvent(event_id, kind, "\n".join(data))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)


class Refused(CliError):
    """The API answered a 4xx: asking again will not help (unlike a lost connection or a 5xx)."""


class FollowLost(CliError):
    """Following gave up: the stream kept breaking. The deployment itself may still be running."""


class DeploymentsApi:
    """The read side of the deployments API, at ``api_url`` with ``token``."""

    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, token: str, reporter: Reporter
    ) -> None:
        self._session = session
        self._base = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._reporter = reporter

    def _url(self, path: str) -> str:
        """``path``: a template of ``gateway.paths``, filled."""
        return self._base + path

    @contextlib.asynccontextmanager
    async def _get(
        self, url: str, action: str, headers: dict[str, str], limits: aiohttp.ClientTimeout
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        self._reporter.debug(f"GET {safe_url(url)}")
        with network_errors(action, url):
            async with self._session.get(
                url, headers={**self._headers, **headers}, timeout=limits, allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    error = await error_from(resp, action, what="URL")
                    if resp.status < 500:
                        raise Refused(error.message) from None
                    raise error
                yield resp

    async def get_json(self, path: str, action: str) -> dict[str, Any]:
        accept = {"Accept": "application/json"}
        async with self._get(self._url(path), action, accept, aiohttp.ClientTimeout(60)) as r:
            with network_errors(action, str(r.url)):
                body = await r.json(content_type=None)
        if not isinstance(body, dict):
            raise CliError(f"{action} failed: the answer is not a JSON object")
        return body

    async def get_text(self, path: str, action: str) -> str:
        async with self._get(self._url(path), action, {}, aiohttp.ClientTimeout(300)) as r:
            with network_errors(action, str(r.url)):
                return await r.text()

    def events(
        self, app: str, deployment_id: str, after: int
    ) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = str(after)
        url = self._url(fill(DEPLOYMENT_EVENTS, app=app, id=deployment_id))
        return self._get(url, f"following deployment {deployment_id}", headers, STREAM_TIMEOUT)


class Printer:
    """Shows a followed deployment on ``stream`` (stderr): output as is, statuses short, and, on
    a terminal, a line with what is awaited while nothing comes."""

    def __init__(self, stream: IO[str], quiet: bool) -> None:
        self._stream = stream
        self._quiet = quiet
        self._waiting = Waiting(stream, progress_allowed(stream, quiet))
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def notice(self, message: str) -> None:
        """Said even with --quiet: what the user must know to go on."""
        self._waiting.hide()
        self._stream.write(f"gateway: {message}\n")
        self._stream.flush()

    def _write(self, text: str) -> None:
        self._waiting.hide()
        if not self._quiet:
            self._stream.write(text)
            self._stream.flush()

    def output(self, content: str) -> None:
        self.tail.extend(content.splitlines())
        self._write(content if content.endswith("\n") else content + "\n")

    def status(self, status: str) -> None:
        self._write(f"-----> {status}\n")
        if status == "queued":
            self.wait("queued: waiting for the deployer to start it")

    def reconnecting(self, cause: str, pause: float, attempt: int) -> None:
        self._write(
            f"gateway: {cause}; reconnecting in {pause:g} s (attempt {attempt} of"
            f" {MAX_RECONNECTS}); the deployment keeps running on the server\n"
        )
        self.wait(f"reconnecting (attempt {attempt} of {MAX_RECONNECTS})")

    def wait(self, description: str) -> None:
        """Show what is awaited until the next line is written (on a terminal only)."""
        self._waiting.show(description)

    def close(self) -> None:
        self._waiting.hide()


class Follower:
    """Follows one deployment's events to a final status, reconnecting when a stream ends early."""

    def __init__(self, api: DeploymentsApi, app: str, deployment_id: str, printer: Printer) -> None:
        self._api = api
        self._app = app
        self._id = deployment_id
        self._printer = printer
        self.last_event = 0
        self._reconnect = RetryPolicy(
            attempts=1 + MAX_RECONNECTS, base_delay=FIRST_PAUSE, max_delay=MAX_PAUSE, jitter=0.0
        )

    async def run(self, waiting_for: str = "waiting for the deployment's events") -> str:
        """The final status, once the deployment has one. A lost connection, a 5xx or a stream
        that ends early is retried with Last-Event-ID; ``Refused`` (4xx) is not."""
        fruitless = 0
        self._printer.wait(waiting_for)
        try:
            while True:
                seen = self.last_event
                try:
                    final = await self._stream_once()
                    cause = "the event stream ended before the final status"
                except Refused:
                    raise
                except CliError as exc:
                    final, cause = None, exc.message
                if final is not None:
                    return final
                fruitless = 1 if self.last_event != seen else fruitless + 1
                if fruitless >= self._reconnect.attempts:
                    raise FollowLost(
                        f"{cause}; gave up after {MAX_RECONNECTS} attempts in a row",
                        exit_code=EXIT_FOLLOW_LOST,
                        hint=(
                            "the deployment may still be running on the server; follow it again"
                            " with:",
                            follow_command(self._app, self._id),
                        ),
                    )
                pause = self._reconnect.delay(fruitless)
                self._printer.reconnecting(cause, pause, fruitless)
                await self._reconnect.pause(fruitless, pause)
        finally:
            self._printer.close()

    async def _stream_once(self) -> str | None:
        async with self._api.events(self._app, self._id, self.last_event) as resp:
            with network_errors(f"following deployment {self._id}", str(resp.url)):
                async for event in server_events(resp.content):
                    final = self._show(event)
                    if final is not None:
                        return final
        return None

    def _show(self, event: ServerEvent) -> str | None:
        try:
            data = json.loads(event.data)
        except ValueError:
            return None
        if event.id and event.id.isdigit():
            self.last_event = int(event.id)
        if not isinstance(data, dict):
            return None
        if event.event == "log" and isinstance(data.get("content"), str):
            self._printer.output(data["content"])
        elif event.event == "status" and isinstance(data.get("status"), str):
            self._printer.status(data["status"])
            if data["status"] in TERMINAL_STATUSES:
                return str(data["status"])
        return None


def follow_command(app: str, deployment_id: str) -> str:
    return shlex.join(["gateway", "deployments", "follow", "--app", app, deployment_id])


def interrupted_hint(app: str, deployment_id: str) -> str:
    return (
        f"stopped following deployment {deployment_id} (it goes on); follow it again with:"
        f" {follow_command(app, deployment_id)}"
    )


async def follow_to_end(
    api: DeploymentsApi,
    app: str,
    deployment_id: str,
    printer: Printer,
    waiting_for: str = "waiting for the deployment's events",
) -> tuple[dict[str, Any], CliError | None]:
    """Follow the deployment to its final status: its answer ``{"deployment": {...}}`` then,
    and the error to report when that status is not success (naming it, with the last output
    lines). On Ctrl-C, says how to follow again (the deployment itself goes on)."""
    try:
        status = await Follower(api, app, deployment_id, printer).run(waiting_for)
    except asyncio.CancelledError:
        # Ctrl-C: the one line says how to pick up again (the runner prints it).
        raise Interrupted(interrupted_hint(app, deployment_id)) from None
    path = fill(DEPLOYMENT, app=app, id=deployment_id)
    async for _ in RECORD_LAG.tries():
        answer = await api.get_json(path, "reading the deployment")
        if answer.get("deployment", {}).get("status") == status:
            break
    if status == "success":
        return answer, None
    tail = "".join(f"\n  {line}" for line in printer.tail)
    last = f"; last output:{tail}" if tail else ""
    return answer, CliError(f"deployment {deployment_id} of {app} ended with {status}{last}")
