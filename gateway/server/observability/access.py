"""Request ids, the client's address, what each request did, and the access log: one line per
request.

Nothing here ever logs a query string: source URLs carry their token there.

The access log does not go through Python's ``logging``: a record, the filters and the formatter
cost more than the rest of a ``POST /v1/sources`` (BENCHMARKS.md, 1c). Its lines are formatted
here, in the shape and with the level and format the ``logging`` section configures for every
other line, and written to standard error in batches: at most ``FLUSH_INTERVAL`` seconds after
a request ended, or once ``FLUSH_LINES`` are waiting (nginx's ``access_log ... buffer= flush=``,
with a short interval).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import TextIO

from aiohttp import web

from gateway.redaction import MASK, redact

REQUEST_ID_HEADER = "X-Request-ID"
# What one write to a pipe may carry without another process's write landing inside it (POSIX's
# PIPE_BUF on Linux): worker processes share one standard error.
ATOMIC_WRITE = 4096
# A client-supplied id is kept only if it is short and plain, so it cannot forge log content.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestTally:
    """What the access line and the metrics say of one request, filled in as it is handled."""

    __slots__ = ("bytes_in", "bytes_out", "outcome", "request_id", "started")

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self.started = started
        self.bytes_in = 0
        # Body bytes a streamed response wrote (headers and chunk framing not counted); None for
        # a response whose body was given whole (its Content-Length says it).
        self.bytes_out: int | None = None
        # How a transfer ended when the status alone does not say it (stored, cancelled...).
        self.outcome: str | None = None


TALLY = web.RequestKey("tally", RequestTally)


def tally_of(request: web.BaseRequest) -> RequestTally:
    """The request's tally: set by the middleware before any handler runs."""
    return request[TALLY]


def request_id_for(request: web.BaseRequest) -> str:
    given = request.headers.get(REQUEST_ID_HEADER)
    if given and _REQUEST_ID_RE.fullmatch(given):
        return given
    return secrets.token_hex(16)


class ClientAddress:
    """The client's address: ``X-Forwarded-For`` is believed only from trusted proxies."""

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def of(self, request: web.BaseRequest) -> str | None:
        remote = request.remote
        if not self._trusted or remote is None or not self._is_trusted(remote):
            return remote
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        # Walk from the nearest hop back; the first address not ours is the client.
        for hop in reversed([h for h in hops if h]):
            if not self._is_trusted(hop):
                return hop
        return remote


def bytes_sent(
    request: web.BaseRequest, response: web.StreamResponse | None, tally: RequestTally
) -> int:
    """Body bytes sent for ``request``: counted when streamed, else the response's length."""
    if tally.bytes_out is not None:
        return tally.bytes_out
    if response is None or request.method == "HEAD":
        return 0
    return response.content_length or 0


# The route label of requests no route matched.
UNMATCHED = "unmatched"


def route_name(request: web.Request) -> str:
    """The matched route's template (``/v1/sources/{id}``), never the concrete path or query."""
    match_info = request.match_info
    if match_info.http_exception is not None:  # no route matched: 404 or 405
        return UNMATCHED
    resource = match_info.route.resource
    if resource is None or resource.name == UNMATCHED:  # refused for its Expect header
        return UNMATCHED
    canonical: str = resource.canonical
    return canonical


# A token that slipped into the path itself (a client that percent-encoded the "?") is cut out.
_TOKEN_IN_PATH_RE = re.compile(r"(?i)(token=|[?;]).*")
# Long enough for every route of the gateway; a longer path is junk and is not worth logging whole.
MAX_LOGGED_PATH = 256


# A path with none of "?", ";", "=" or white space: nothing in it for the two steps below.
_PLAIN_PATH_RE = re.compile(r"[^?;=\s]*")


def loggable_path(path: str) -> str:
    """``path`` as it may appear in a log line: nothing from a ``?``, ``;`` or ``token=`` on,
    and no other credential parameter (``redact``)."""
    if len(path) <= MAX_LOGGED_PATH and _PLAIN_PATH_RE.fullmatch(path):
        return path
    safe = redact(_TOKEN_IN_PATH_RE.sub(MASK, path))
    return safe if len(safe) <= MAX_LOGGED_PATH else safe[:MAX_LOGGED_PATH] + "[...]"


# Buffered lines are written at most this many seconds after the first of them...
FLUSH_INTERVAL = 0.1
# ...or as soon as this many are waiting.
FLUSH_LINES = 256


# A request's fields, as ``AccessLog.record`` keeps them until its line is written: time,
# duration (s), method, path, route, status, bytes in, bytes out, request id, remote, outcome.
_Entry = tuple[float, float, str, str, str, int, int, int, str, str | None, str | None]


class _Stamp:
    """The line's time as the ``logging`` formatter writes it, the second's part made once."""

    def __init__(self, as_json: bool) -> None:
        self._as_json = as_json
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if self._as_json:
            # As datetime.fromtimestamp (JsonFormatter's): rounded to the microsecond first.
            micros = round((now - second) * 1_000_000)
            if micros == 1_000_000:
                second, micros = second + 1, 0
            millis = micros // 1000
        else:
            millis = int((now - second) * 1000)  # as logging's msecs
        if second != self._second:
            self._second = second
            if self._as_json:  # 2026-11-23T06:21:13.963+00:00
                self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            else:  # logging's asctime: 2026-11-23 07:21:13,963, local time
                self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        if self._as_json:
            return f"{self._prefix}.{millis:03d}+00:00"
        return f"{self._prefix},{millis:03d}"


class _JsonLine:
    """An entry as the JSON line ``logging``'s JsonFormatter would write for it: the same keys
    in the same order, with json's spacing and string escaping, without a dict or an encoder."""

    def __init__(self, worker: int | None = None) -> None:
        self._stamp = _Stamp(as_json=True)
        self._end = "}\n" if worker is None else f', "worker": {int(worker)}}}\n'

    def __call__(self, entry: _Entry) -> str:
        (
            now,
            duration,
            method,
            raw_path,
            route,
            status,
            bytes_in,
            bytes_out,
            rid,
            remote,
            outcome,
        ) = entry
        path = loggable_path(raw_path)
        message = f"{method} {path} {status}"
        return (
            f'{{"time": "{self._stamp(now)}", "level": "info", "logger": "{AccessLog.LOGGER}", '
            f'"message": {_json(message)}, "method": {_json(method)}, "path": {_json(path)}, '
            f'"route": {_json(route)}, "status": {status}, "bytes_in": {bytes_in}, '
            f'"bytes_out": {bytes_out}, "duration_ms": {round(duration * 1000, 2)!r}, '
            f'"request_id": {_json(rid)}, "remote": {_json(remote)}, '
            f'"outcome": {_json(outcome)}{self._end}'
        )


class _TextLine:
    """An entry as ``logging``'s plain format writes a line: time, level, logger, message."""

    def __init__(self) -> None:
        self._stamp = _Stamp(as_json=False)

    def __call__(self, entry: _Entry) -> str:
        now, _, method, raw_path, _, status = entry[:6]
        message = f"{method} {loggable_path(raw_path)} {status}"
        return f"{self._stamp(now)} INFO {AccessLog.LOGGER} {message}\n"


def _whole_lines(lines: Iterable[str]) -> Iterator[str]:
    """``lines`` joined in pieces of at most ``ATOMIC_WRITE`` bytes (a longer line alone): each
    piece is one write, so workers sharing standard error never cut into each other's lines."""
    piece: list[str] = []
    size = 0
    for line in lines:
        if piece and size + len(line) > ATOMIC_WRITE:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield "".join(piece)


def _json(text: str | None) -> str:
    return "null" if text is None else encode_basestring_ascii(text)


class AccessLog:
    """The access log: one line per request, JSON or text, written in batches to ``stream``
    (standard error as it is when the batch is written, by default).

    A request leaves its fields; they become lines when the batch is written, all at once (the
    formatting code stays hot in the CPU's caches instead of running between two requests)."""

    LOGGER = "gateway.access"

    def __init__(
        self,
        *,
        enabled: bool,
        as_json: bool,
        stream: Callable[[], TextIO] = lambda: sys.stderr,
        clock: Callable[[], float] = time.time,
        worker: int | None = None,
    ) -> None:
        self.enabled = enabled
        self._stream = stream
        self._clock = clock
        self._format = _JsonLine(worker) if as_json else _TextLine()
        self._entries: list[_Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def record(
        self,
        request: web.BaseRequest,
        tally: RequestTally,
        route: str,
        status: int,
        bytes_out: int,
        client: str | None,
    ) -> None:
        """Add the request's line (never with a query string)."""
        if not self.enabled:
            return
        duration = time.monotonic() - tally.started
        entry = (
            self._clock(),
            duration,
            request.method,
            request.path,
            route,
            status,
            tally.bytes_in,
            bytes_out,
            tally.request_id,
            client,
            tally.outcome,
        )
        entries = self._entries
        entries.append(entry)
        if len(entries) >= FLUSH_LINES or self._closed:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
            else:
                self._timer = loop.call_later(FLUSH_INTERVAL, self.flush)

    def close(self) -> None:
        """Write every buffered line now, and any line recorded from now on at once: the server
        is stopping, and a timer may never fire again (a request cancelled at the end of the
        shutdown still records its line)."""
        self._closed = True
        self.flush()

    def flush(self) -> None:
        """Write every buffered line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        entries, self._entries = self._entries, []
        if not entries:
            return
        try:
            stream = self._stream()
            for text in _whole_lines(map(self._format, entries)):
                stream.write(text)
                stream.flush()
        except (OSError, ValueError):
            # Standard error is gone (a closed pipe): as ``logging`` does, serving goes on.
            pass
