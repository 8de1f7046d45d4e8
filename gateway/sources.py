"""HTTP handlers for sources: create, upload (PUT), download (GET, HEAD)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import keys
from .errors import (
    BadRequest,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RequestTimeout,
    UnsupportedMediaType,
)
from .observability import BYTES_IN, OUTCOME
from .signing import Purpose, VerifiedToken
from .storage import ObjectInfo
from .uploads import SINGLE_PUT_LIMIT, parse_content_md5

log = logging.getLogger(__name__)

DEFAULT_CONTENT_TYPE = "application/gzip"
# The platform's deployer refuses archives served as octet-stream: store those as gzip.
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
# How much of a request body POST /v1/sources reads: it only ever expects "" or "{}".
MAX_CREATE_BODY = 64 * 1024
# Exceptions that mean the client went away mid-transfer: an outcome, not a server error.
CLIENT_GONE = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def object_key(config_prefix: str, source_id: str) -> str:
    return f"{config_prefix}{source_id}"


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_json_object(request: web.Request, *, allow_empty: bool) -> dict[str, Any]:
    """Read a small JSON object body: 415 for a non-JSON type, 400 for malformed JSON."""
    if request.content_length is not None and request.content_length > MAX_CREATE_BODY:
        raise PayloadTooLarge("request body too large")
    raw = await request.content.read(MAX_CREATE_BODY + 1)
    if len(raw) > MAX_CREATE_BODY:
        raise PayloadTooLarge("request body too large")
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; expected a JSON object", code="invalid_json")
    if not is_json_type(request.content_type):
        raise UnsupportedMediaType("expected Content-Type: application/json")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return data


def source_urls(base_url: str, source_id: str, upload: str, download: str) -> dict[str, str]:
    path = f"{base_url}/v1/sources/{source_id}"
    return {"upload_url": f"{path}?token={upload}", "download_url": f"{path}?token={download}"}


async def create_source(request: web.Request) -> web.Response:
    app = request.app
    app[keys.AUTH].authenticate(request.headers.get("Authorization"))
    await read_json_object(request, allow_empty=True)
    signer = app[keys.SIGNER]
    source_id = str(uuid.uuid4())
    # itsdangerous stamps whole seconds; the expiry is computed the way verify() will judge it.
    issued = int(signer.now())
    urls = source_urls(
        app[keys.CONFIG].server.base_url,
        source_id,
        signer.sign(Purpose.UPLOAD, source_id),
        signer.sign(Purpose.DOWNLOAD, source_id),
    )
    source = {**urls, "id": source_id, "expires_at": rfc3339(issued + signer.ttl_seconds)}
    return web.json_response({**source, "source": source}, status=201)


def _verify(request: web.Request, purpose: Purpose) -> tuple[str, VerifiedToken]:
    source_id = request.match_info["id"]
    token = request.app[keys.SIGNER].verify(purpose, source_id, request.query.get("token"))
    return source_id, token


def stored_content_type(header: str | None) -> str:
    value = (header or "").strip()
    if value.split(";")[0].strip().lower() in _GENERIC_TYPES:
        return DEFAULT_CONTENT_TYPE
    return value


async def defer_continue(request: web.Request) -> None:
    """Expect handler for PUT: send nothing yet; ``upload`` sends 100 Continue once it accepts.

    aiohttp's default handler answers 100 before the handler runs, which would make a client with
    a bad token or an oversized file send its whole body for nothing."""
    expect = request.headers.get("Expect", "").lower()
    if expect != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {expect}")


async def _send_continue(request: web.Request) -> None:
    if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


async def _counted(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives, counted; ``RequestTimeout`` if it stalls.

    aiohttp's server has no idle timeout of its own while a handler reads a body."""
    metrics = request.app[keys.METRICS]
    idle = request.app[keys.CONFIG].server.body_timeout
    request[BYTES_IN] = 0
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await request.content.readany()
        except TimeoutError:
            raise RequestTimeout(f"no body data for {idle:g} seconds; upload abandoned") from None
        if not chunk:
            return
        request[BYTES_IN] += len(chunk)
        metrics.bytes_uploaded.inc(len(chunk))
        yield chunk


async def upload_source(request: web.Request) -> web.Response:
    app = request.app
    config = app[keys.CONFIG]
    source_id, _ = _verify(request, Purpose.UPLOAD)
    length = request.content_length
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        length = None
    limit = config.sources.max_size_bytes
    if length is not None and length > limit:
        raise PayloadTooLarge(f"upload is larger than the limit of {limit} bytes")
    content_md5 = parse_content_md5(request.headers.get("Content-MD5"))
    content_type = stored_content_type(request.headers.get("Content-Type"))
    await _send_continue(request)

    metrics = app[keys.METRICS]
    metrics.inflight.labels("upload").inc()
    try:
        result = await app[keys.UPLOADER].upload(
            object_key(config.storage.prefix, source_id),
            _counted(request),
            length=length,
            content_type=content_type,
            content_md5=content_md5,
        )
    except BaseException:
        metrics.uploads.labels("aborted").inc()
        raise
    finally:
        metrics.inflight.labels("upload").dec()
    metrics.uploads.labels("completed").inc()
    request[OUTCOME] = "stored"
    assert length is None or length <= SINGLE_PUT_LIMIT or result.size == length
    return web.json_response(
        {"id": source_id, "size": result.size, "sha256": result.sha256},
        status=200,
        headers={"ETag": result.etag},
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks for, or None to send the whole object.

    A header we do not understand (other unit, several ranges, malformed) is ignored, as RFC 9110
    allows; a well-formed range that starts past the end raises ``RangeNotSatisfiable``."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return start, end


def _etag_matches(header: str, etag: str) -> bool:
    def strip_weak(tag: str) -> str:
        return tag[2:] if tag.startswith("W/") else tag

    tags = [strip_weak(t.strip()) for t in header.split(",")]
    return "*" in tags or strip_weak(etag) in tags


def download_headers(info: ObjectInfo) -> dict[str, str]:
    headers = {
        "ETag": info.etag,
        "Last-Modified": info.last_modified.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Accept-Ranges": "bytes",
        # The URL carries a credential: shared caches must not keep what it returns.
        "Cache-Control": "private, no-store",
    }
    if info.sha256:
        headers["X-Checksum-Sha256"] = info.sha256
        digest = base64.b64encode(bytes.fromhex(info.sha256)).decode()
        headers["Repr-Digest"] = f"sha-256=:{digest}:"
    return headers


async def download_source(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[keys.CONFIG]
    source_id, token = _verify(request, Purpose.DOWNLOAD)
    key = object_key(config.storage.prefix, source_id)
    store = app[keys.STORE]
    info = await store.stat(key)

    if config.sources.download_mode == "redirect":
        # The presigned URL dies no later than the token that let the client ask for it.
        remaining = int(token.expires_at - app[keys.SIGNER].now())
        location = await store.presign_get(key, max(1, remaining))
        raise web.HTTPTemporaryRedirect(location, headers={"Cache-Control": "private, no-store"})

    headers = download_headers(info)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and _etag_matches(if_none_match, info.etag):
        return web.Response(status=304, headers=headers)

    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range and if_range.strip() != info.etag:
        range_header = None  # the client's partial copy is stale: send everything
    byte_range = parse_range(range_header, info.size)
    if byte_range is None:
        status, start, end = 200, 0, info.size - 1
    else:
        status, (start, end) = 206, byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"

    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = info.content_type
    response.content_length = end - start + 1
    if request.method == "HEAD" or end < start:
        await response.prepare(request)
        await response.write_eof()
        return response
    async with contextlib.AsyncExitStack() as stack:
        # S3 is asked for the body before the headers go out, so a failure is still a JSON error.
        # Pinned to the version described by the headers: a re-upload meanwhile is a 503.
        chunks = await stack.enter_async_context(store.read(key, start, end, info.etag))
        await response.prepare(request)
        await _stream_object(request, response, key, chunks)
    return response


async def _stream_object(
    request: web.Request, response: web.StreamResponse, key: str, chunks: AsyncIterator[bytes]
) -> None:
    metrics = request.app[keys.METRICS]
    metrics.inflight.labels("download").inc()
    try:
        async for chunk in chunks:
            await response.write(chunk)
            metrics.bytes_downloaded.inc(len(chunk))
        await response.write_eof()
    except CLIENT_GONE:
        request[OUTCOME] = "client_disconnected"
    except Exception as exc:
        # Headers are gone already: closing the connection short of Content-Length is the only
        # way left to tell the client the body is incomplete.
        request[OUTCOME] = "upstream_failed"
        log.warning("download of %s failed mid-stream: %s", key, type(exc).__name__)
        response.force_close()
        if request.transport is not None:
            request.transport.close()
    finally:
        metrics.inflight.labels("download").dec()
