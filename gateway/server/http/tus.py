"""tus 1.0.0 on the source URLs (tus-js-client, Uppy, tuspy): a thin adapter over the session core.

``POST upload_url`` creates (creation, creation-with-upload, creation-defer-length); the upload
resource answers ``HEAD`` (offset), ``PATCH`` (append), ``DELETE`` (termination) and ``OPTIONS``
(discovery). ``Upload-Checksum`` (checksum extension) is checked per ``PATCH``: a mismatch is 460
and the chunk is discarded. The ``Location`` is absolute: the clients resolve a relative one
against the endpoint and lose its query string (the token).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from aiohttp import web

from gateway.error_codes import Code
from gateway.errors import BadRequest, ChecksumMismatch, TusPreconditionFailed, UnsupportedMediaType
from gateway.server.domain.resumable_finish import Claim
from gateway.server.domain.sources import stored_content_type
from gateway.server.http.expect import send_continue
from gateway.server.http.resumable import (
    ResumableHttp,
    body_length,
    failed_answer,
    finished,
    http_date,
    integer_header,
)

# The tus headers, in one place.
VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination"
OFFSET_TYPE = "application/offset+octet-stream"
RESUMABLE = "Tus-Resumable"
UPLOAD_OFFSET = "Upload-Offset"
UPLOAD_LENGTH = "Upload-Length"
DEFER_LENGTH = "Upload-Defer-Length"
UPLOAD_METADATA = "Upload-Metadata"
UPLOAD_EXPIRES = "Upload-Expires"
UPLOAD_CHECKSUM = "Upload-Checksum"
# Upload-Metadata keys that name the file's media type (tus-js-client and Uppy send filetype).
TYPE_KEYS = ("filetype", "contentType", "content-type", "type")
# An Upload-Metadata value longer than this is refused: it is kept in the upload's state.
MAX_METADATA = 4096
META_KEY = "tus-metadata"


class _Checksum:
    """An ``Upload-Checksum`` over one PATCH body: ``update`` with each chunk, then ``verify``."""

    def __init__(self, algorithm: str, digest: bytes) -> None:
        self._hash = hashlib.new(algorithm, usedforsecurity=False)
        self._digest = digest

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def verify(self) -> None:
        if self._hash.digest() != self._digest:
            raise ChecksumMismatch("Upload-Checksum does not match the body; chunk discarded")


class TusHandlers:
    """The tus 1.0.0 requests; ``algorithms`` are the checksums ``Upload-Checksum`` may use."""

    def __init__(self, common: ResumableHttp, algorithms: tuple[str, ...]) -> None:
        self._c = common
        self._algorithms = algorithms

    def _headers(self, claim: Claim | None = None) -> dict[str, str]:
        headers = {RESUMABLE: VERSION, "Cache-Control": "no-store"}
        if claim is not None:
            headers[UPLOAD_EXPIRES] = http_date(claim.state.expires_at)
        return headers

    async def create(self, request: web.Request) -> web.StreamResponse:
        _require_version(request)
        source_id, created_by = await self._c.source(request)
        length = integer_header(request, UPLOAD_LENGTH)
        deferred = request.headers.get(DEFER_LENGTH)
        if (length is None) == (deferred is None) or deferred not in (None, "1"):
            raise BadRequest(
                f"send either {UPLOAD_LENGTH} or '{DEFER_LENGTH}: 1'", code=Code.INVALID_HEADER
            )
        metadata = request.headers.get(UPLOAD_METADATA, "")
        fields = parse_metadata(metadata)
        kind = next((fields[k] for k in TYPE_KEYS if fields.get(k)), None)
        content_type = stored_content_type(kind.decode("latin-1") if kind else None)
        with_body = request.body_exists and request.content_type == OFFSET_TYPE
        claim = await self._c.sessions.create(
            source_id,
            length=length,
            content_type=content_type,
            meta={META_KEY: metadata},
            created_by=created_by,
        )
        headers = self._headers(claim)
        token = self._c.resume_token(claim)
        headers["Location"] = self._c.location(claim, token)
        if with_body:
            authorize = self._c.authorizer(source_id, claim.state.upload_id, token)
            with self._c.holding(claim.state):
                await send_continue(request)
                await self._c.sessions.append(
                    claim,
                    0,
                    self._c.body(request),
                    complete=None,
                    body_length=body_length(request),
                    authorize=authorize,
                )
            headers[UPLOAD_OFFSET] = str(claim.state.offset)
        return web.Response(status=201, headers=headers)

    async def head(self, request: web.Request) -> web.StreamResponse:
        _require_version(request)
        source_id, upload_id, authorize = await self._c.upload(request)
        claim = await self._c.sessions.claim(source_id, upload_id)
        await self._c.sessions.finish_pending(claim, authorize)
        refused = failed_answer(claim)
        if refused is not None:
            return refused
        state = claim.state
        headers = self._headers(claim)
        headers[UPLOAD_OFFSET] = str(state.offset)
        if state.length is None:
            headers[DEFER_LENGTH] = "1"
        else:
            headers[UPLOAD_LENGTH] = str(state.length)
        if state.meta.get(META_KEY):
            headers[UPLOAD_METADATA] = state.meta[META_KEY]
        return web.Response(status=200, headers=headers)

    async def patch(self, request: web.Request) -> web.StreamResponse:
        _require_version(request)
        if request.content_type != OFFSET_TYPE:
            raise UnsupportedMediaType(f"a tus PATCH body is {OFFSET_TYPE}")
        offset = integer_header(request, UPLOAD_OFFSET)
        if offset is None:
            raise BadRequest(f"{UPLOAD_OFFSET} is required", code=Code.INVALID_HEADER)
        length = integer_header(request, UPLOAD_LENGTH)
        check = self._checksum(request.headers.get(UPLOAD_CHECKSUM))
        source_id, upload_id, authorize = await self._c.upload(request)
        claim = await self._c.sessions.claim(source_id, upload_id)
        refused = failed_answer(claim)
        if refused is not None:
            return refused
        with self._c.holding(claim.state):
            if offset == claim.state.offset:  # a refused append never transfers its body
                await send_continue(request)
            await self._c.sessions.append(
                claim,
                offset,
                self._c.body(request),
                complete=None,
                length=length,
                body_length=body_length(request),
                check=check,
                authorize=authorize,
            )
        headers = self._headers(claim)
        headers[UPLOAD_OFFSET] = str(claim.state.offset)
        answer = finished(claim)
        if answer is not None:
            headers["X-Checksum-Sha256"] = str(answer["sha256"])
        return web.Response(status=204, headers=headers)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        _require_version(request)
        source_id, upload_id, _ = await self._c.upload(request)
        claim = await self._c.sessions.claim(source_id, upload_id)
        await self._c.sessions.cancel(claim)
        return web.Response(status=204, headers=self._headers())

    async def options(self, request: web.Request) -> web.StreamResponse:
        """Discovery: what this server speaks (tus and the draft's limits), no token needed."""
        headers = {
            RESUMABLE: VERSION,
            "Tus-Version": VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(self._c.sessions.max_size),
            "Tus-Checksum-Algorithm": ",".join(self._algorithms),
            **self.discovery_extra(),
        }
        return web.Response(status=204, headers=headers)

    def discovery_extra(self) -> dict[str, str]:
        """Headers another protocol adds to the discovery answer (set by the app factory)."""
        return {}

    def _checksum(self, header: str | None) -> _Checksum | None:
        if header is None:
            return None
        algorithm, _, encoded = header.strip().partition(" ")
        if algorithm not in self._algorithms:
            raise BadRequest(
                f"Upload-Checksum algorithm must be one of {', '.join(self._algorithms)}",
                code=Code.UNSUPPORTED_CHECKSUM,
            )
        try:
            digest = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("Upload-Checksum is not base64", code=Code.INVALID_HEADER) from None
        return _Checksum(algorithm, digest)


def _require_version(request: web.Request) -> None:
    if request.headers.get(RESUMABLE) != VERSION:
        raise TusPreconditionFailed(f"send '{RESUMABLE}: {VERSION}'")


def parse_metadata(header: str) -> dict[str, bytes]:
    """tus ``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional)."""
    if len(header) > MAX_METADATA:
        raise BadRequest(f"{UPLOAD_METADATA} is too long", code=Code.INVALID_HEADER)
    fields: dict[str, bytes] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, encoded = pair.partition(" ")
        try:
            fields[key] = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(
                f"{UPLOAD_METADATA} value is not base64", code=Code.INVALID_HEADER
            ) from None
    return fields
