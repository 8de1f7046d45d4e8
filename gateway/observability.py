"""Logging, request ids, access log lines and Prometheus metrics.

Nothing here ever logs a query string: source URLs carry their token there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

access_log = logging.getLogger("gateway.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client-supplied id is kept only if it is short and plain, so it cannot forge log content.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID = web.RequestKey("request_id", str)
BYTES_IN = web.RequestKey("bytes_in", int)
# Body bytes written by a streamed response (headers and chunk framing not counted).
BYTES_OUT = web.RequestKey("bytes_out", int)
# How a transfer ended when the status alone does not say it (stored, client_disconnected...).
OUTCOME = web.RequestKey("outcome", str)


class Metrics:
    """The gateway's Prometheus metrics, in a registry of its own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "HTTP requests handled.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer a request, body transfer included.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.bytes_uploaded = Counter(
            "gateway_upload_bytes", "Bytes received in upload bodies.", registry=r
        )
        self.bytes_downloaded = Counter(
            "gateway_download_bytes", "Bytes sent in download bodies.", registry=r
        )
        self.uploads = Counter(
            "gateway_uploads", "Uploads by outcome (completed, aborted).", ["outcome"], registry=r
        )
        self.s3_errors = Counter(
            "gateway_s3_errors", "Failed object-store calls.", ["operation"], registry=r
        )
        self.deployments = Counter(
            "gateway_deployments",
            "Deployments by outcome (forwarded, rejected, failed).",
            ["outcome"],
            registry=r,
        )
        self.inflight = Gauge(
            "gateway_inflight_transfers",
            "Uploads and downloads in progress.",
            ["direction"],
            registry=r,
        )
        self.buffer_bytes = Gauge(
            "gateway_buffer_bytes", "Bytes of part buffers reserved by uploads.", registry=r
        )


class InFlight:
    """The requests being handled, and whether this instance is draining for a shutdown.

    ``gateway serve`` waits on it after SIGTERM (see ``__main__.serve``); readiness fails while
    draining, so load balancers stop sending new work."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def begin(self) -> None:
        self.count += 1
        self._idle.clear()

    def end(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight (callers bound the wait with a timeout)."""
        await self._idle.wait()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and any ``extra`` fields."""

    RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self.RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


# Credentials that may travel inside text a library logs (aiohttp quotes the raw request line of
# a malformed request, query string and all): the value after any of these is masked.
_SECRET_IN_TEXT = re.compile(
    r"((?:token|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature)=|"
    r"(?:Bearer|Basic)\s+)[^\s&'\"]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _SECRET_IN_TEXT.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    """Masks tokens and signatures in every record's message and traceback, whatever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets())
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log prints the query string (the token): ours replaces it.
    logging.getLogger("aiohttp.access").disabled = True
    for noisy in ("botocore", "aiobotocore", "werkzeug", "moto"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def request_id_for(request: web.BaseRequest) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex


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
        if remote is None or not self._is_trusted(remote):
            return remote
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        # Walk from the nearest hop back; the first address not ours is the client.
        for hop in reversed([h for h in hops if h]):
            if not self._is_trusted(hop):
                return hop
        return remote


async def count_streamed_bytes(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: count the body bytes a streamed response writes.

    aiohttp's own ``body_length`` counts the header block too, and only once ``write_eof`` ran,
    so a download cut short by its client would log 0 bytes sent."""
    if isinstance(response, web.Response):
        return  # the body is known: content_length
    request[BYTES_OUT] = 0
    write = response.write

    async def counting_write(data: bytes | bytearray | memoryview) -> None:
        await write(data)
        request[BYTES_OUT] += len(data)

    response.write = counting_write  # type: ignore[method-assign]


def bytes_sent(request: web.BaseRequest, response: web.StreamResponse | None) -> int:
    """Body bytes sent for ``request``: counted when streamed, else the response's length."""
    if BYTES_OUT in request:
        return request[BYTES_OUT]
    if response is None or request.method == "HEAD":
        return 0
    return response.content_length or 0


def route_name(request: web.BaseRequest) -> str:
    """The matched route's template (``/v1/sources/{id}``), never the concrete path or query."""
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None or getattr(match_info, "http_exception", None) is not None:
        return "unmatched"
    canonical: str = resource.canonical
    return canonical


# A token that slipped into the path itself (a client that percent-encoded the "?") is cut out.
_TOKEN_IN_PATH_RE = re.compile(r"(?i)(token=|[?;]).*")
# Long enough for every route of the gateway; a longer path is junk and is not worth logging whole.
MAX_LOGGED_PATH = 256


def loggable_path(path: str) -> str:
    """``path`` as it may appear in a log line: nothing from a ``?``, ``;`` or ``token=`` on."""
    safe = _TOKEN_IN_PATH_RE.sub("[redacted]", path)
    return safe if len(safe) <= MAX_LOGGED_PATH else safe[:MAX_LOGGED_PATH] + "[...]"


def log_access(
    request: web.BaseRequest,
    status: int,
    bytes_out: int,
    started: float,
    client: str | None,
) -> None:
    """Emit the request's one access log line (JSON fields as ``extra``; never a query string)."""
    duration = time.monotonic() - started
    path = loggable_path(request.path)
    access_log.info(
        "%s %s %s",
        request.method,
        path,
        status,
        extra={
            "method": request.method,
            "path": path,
            "route": route_name(request),
            "status": status,
            "bytes_in": request.get(BYTES_IN, 0),
            "bytes_out": bytes_out,
            "duration_ms": round(duration * 1000, 2),
            "request_id": request.get(REQUEST_ID),
            "remote": client,
            "outcome": request.get(OUTCOME),
        },
    )
