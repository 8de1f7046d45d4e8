"""The IETF resumable-upload draft (draft-ietf-httpbis-resumable-upload) on the source URLs.

A thin adapter over the session core, for the interop versions in
``sources.resumable.interop_versions``. Per version, the draft's own differences (the table
below): ``Upload-Incomplete`` (3) or ``Upload-Complete`` (5 on); ``application/partial-upload``
as the PATCH media type from 6; ``max-age`` in ``Upload-Limit`` from 7 (``expires`` before);
offset retrieval by ``GET`` as well as ``HEAD`` from 9. Where a client does otherwise, the client
is followed: tus-js-client's draft modes send ``Upload-Length`` (or ``Upload-Defer-Length: 1``)
on creation and read ``Upload-Offset`` from every PATCH answer, so both are accepted and sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.error_codes import Code
from gateway.errors import BadRequest, UnsupportedMediaType
from gateway.server.domain.resumable_finish import Authorize, Claim
from gateway.server.domain.sources import stored_content_type
from gateway.server.http.expect import send_continue
from gateway.server.http.resumable import (
    DRAFT_VERSION_HEADER,
    ResumableHttp,
    body_length,
    failed_answer,
    finished,
    integer_header,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The draft's headers and media type, in one place.
UPLOAD_COMPLETE = "Upload-Complete"
UPLOAD_INCOMPLETE = "Upload-Incomplete"  # interop version 3
UPLOAD_OFFSET = "Upload-Offset"
UPLOAD_LENGTH = "Upload-Length"
UPLOAD_LIMIT = "Upload-Limit"
DEFER_LENGTH = "Upload-Defer-Length"  # tus-js-client sends it in its draft modes too
CONTENT_DIGEST = "Content-Digest"
REPR_DIGEST = "Repr-Digest"
PARTIAL_UPLOAD = "application/partial-upload"
# From which interop version each rule holds.
PARTIAL_UPLOAD_FROM = 6
MAX_AGE_FROM = 7
GET_OFFSET_FROM = 9
# RFC 9530 digest algorithms checked, by their names there.
DIGESTS = {"sha-256": "sha256", "sha-512": "sha512"}


class _Digest:
    """A ``Content-Digest`` over one request's bytes."""

    def __init__(self, algorithm: str, digest: bytes) -> None:
        self._hash = hashlib.new(algorithm)
        self._digest = digest

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def verify(self) -> None:
        if self._hash.digest() != self._digest:
            raise BadRequest("Content-Digest does not match the body", code=Code.DIGEST_MISMATCH)


def parse_digest(value: str | None, header: str) -> tuple[str, bytes] | None:
    """The first algorithm of an RFC 9530 digest field the gateway checks: (hashlib name, digest).
    None when absent or naming none of them (the field is then ignored, as RFC 9530 allows)."""
    if not value:
        return None
    for member in value.split(","):
        name, _, encoded = member.strip().partition("=")
        algorithm = DIGESTS.get(name.strip().lower())
        encoded = encoded.strip()
        if algorithm is None:
            continue
        if not (encoded.startswith(":") and encoded.endswith(":") and len(encoded) >= 2):
            raise BadRequest(
                f"{header} is not a byte sequence (:base64:)", code=Code.INVALID_HEADER
            )
        try:
            return algorithm, base64.b64decode(encoded[1:-1], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"{header} is not base64", code=Code.INVALID_HEADER) from None
    return None


def _flag(value: str | None, header: str) -> bool | None:
    if value is None:
        return None
    value = value.strip()
    if value not in ("?0", "?1"):
        raise BadRequest(f"{header} must be ?0 or ?1", code=Code.INVALID_HEADER)
    return value == "?1"


class DraftHandlers:
    """The draft's requests; ``plain`` is the ordinary upload a ``PUT`` falls back to."""

    def __init__(
        self, common: ResumableHttp, versions: tuple[int, ...], send_104: bool, plain: Handler
    ) -> None:
        self._c = common
        self._versions = frozenset(versions)
        self._send_104 = send_104
        self._plain = plain

    def version(self, request: web.Request) -> int | None:
        """The request's interop version when this gateway speaks it, else None."""
        version = integer_header(request, DRAFT_VERSION_HEADER)
        return version if version in self._versions else None

    def _complete(self, request: web.Request, version: int) -> bool | None:
        if version == 3:
            incomplete = _flag(request.headers.get(UPLOAD_INCOMPLETE), UPLOAD_INCOMPLETE)
            return None if incomplete is None else not incomplete
        return _flag(request.headers.get(UPLOAD_COMPLETE), UPLOAD_COMPLETE)

    def _headers(self, claim: Claim, version: int, complete: bool) -> dict[str, str]:
        state = claim.state
        headers = {
            UPLOAD_OFFSET: str(state.offset),
            UPLOAD_LIMIT: self._limit(claim, version),
            "Cache-Control": "no-store",
            DRAFT_VERSION_HEADER: str(version),
        }
        if version == 3:
            headers[UPLOAD_INCOMPLETE] = "?0" if complete else "?1"
        else:
            headers[UPLOAD_COMPLETE] = "?1" if complete else "?0"
        if state.length is not None:
            headers[UPLOAD_LENGTH] = str(state.length)
        return headers

    def _limit(self, claim: Claim, version: int) -> str:
        left = max(0, int(claim.state.expires_at - self._c.tokens.now()))
        age = "max-age" if version >= MAX_AGE_FROM else "expires"
        return f"max-size={self._c.sessions.max_size}, {age}={left}"

    async def create(self, request: web.Request) -> web.StreamResponse:
        """``PUT``/``POST upload_url`` with the draft's headers; a ``PUT`` without them (or in a
        version this gateway does not speak) is the plain upload."""
        version = self.version(request)
        complete = None if version is None else self._complete(request, version)
        if version is None or complete is None:
            if request.method == "PUT":
                return await self._plain(request)
            raise BadRequest(
                f"send {DRAFT_VERSION_HEADER} (one of {sorted(self._versions)}) and "
                f"{UPLOAD_COMPLETE}",
                code=Code.INVALID_HEADER,
            )
        if complete and not self._send_104:
            # The whole body in one request, and no 104 to tell its resource early: exactly the
            # plain upload, with the draft's header on the answer.
            response = await self._plain(request)
            response.headers[UPLOAD_COMPLETE] = "?1"
            return response
        source_id, created_by = await self._c.source(request)
        length = integer_header(request, UPLOAD_LENGTH)
        if complete and request.content_length is not None:
            length = request.content_length
        repr_digest = parse_digest(request.headers.get(REPR_DIGEST), REPR_DIGEST)
        claim = await self._c.sessions.create(
            source_id,
            length=length,
            content_type=stored_content_type(_content_type(request)),
            meta={},
            expected_sha256=_sha256_of(repr_digest),
            created_by=created_by,
        )
        token = self._c.resume_token(claim)
        location = self._c.location(claim, token)
        if self._send_104:
            await _interim_104(request, version, location)
        authorize = self._c.authorizer(source_id, claim.state.upload_id, token)
        if not complete and body_length(request) == 0:
            # Nothing to append (the CLI's creation): no part buffer, no upload slot taken.
            response = web.Response(status=204, headers=self._headers(claim, version, False))
        else:
            response = await self._append(request, claim, version, complete, authorize)
        response.headers["Location"] = location
        if response.status == 204:
            response.set_status(201)
        return response

    async def _append(
        self,
        request: web.Request,
        claim: Claim,
        version: int,
        complete: bool,
        authorize: Authorize,
        offset: int | None = None,
    ) -> web.StreamResponse:
        digest = parse_digest(request.headers.get(CONTENT_DIGEST), CONTENT_DIGEST)
        length = integer_header(request, UPLOAD_LENGTH)
        with self._c.holding(claim.state):
            await send_continue(request)
            await self._c.sessions.append(
                claim,
                claim.state.offset if offset is None else offset,
                self._c.body(request),
                complete=complete,
                length=length,
                body_length=body_length(request),
                check=_Digest(*digest) if digest else None,
                authorize=authorize,
            )
        answer = finished(claim)
        headers = self._headers(claim, version, answer is not None)
        if answer is None:
            return web.Response(status=204, headers=headers)
        headers["ETag"] = str((claim.state.answer or {}).get("etag", ""))
        return web.json_response(answer, status=200, headers=headers)

    async def offset(self, request: web.Request) -> web.StreamResponse:
        """``HEAD`` (and ``GET`` from version 9) on the upload resource."""
        version = self._require_version(request)
        if request.method == "GET" and version < GET_OFFSET_FROM:
            raise BadRequest(f"GET reads the offset from interop version {GET_OFFSET_FROM} on")
        source_id, upload_id, authorize = await self._c.upload(request)
        claim = await self._c.sessions.claim(source_id, upload_id)
        await self._c.sessions.finish_pending(claim, authorize)
        refused = failed_answer(claim)
        if refused is not None:
            return refused
        headers = self._headers(claim, version, claim.state.status == "done")
        answer = finished(claim)
        if answer is not None:
            # A client whose completing request lost its answer still learns what was stored.
            digest = base64.b64encode(bytes.fromhex(str(answer["sha256"]))).decode()
            headers[REPR_DIGEST] = f"sha-256=:{digest}:"
        return web.Response(status=204, headers=headers)

    async def patch(self, request: web.Request) -> web.StreamResponse:
        version = self._require_version(request)
        if version >= PARTIAL_UPLOAD_FROM and request.content_type != PARTIAL_UPLOAD:
            raise UnsupportedMediaType(f"an append's body is {PARTIAL_UPLOAD}")
        complete = self._complete(request, version)
        offset = integer_header(request, UPLOAD_OFFSET)
        if complete is None or offset is None:
            raise BadRequest(
                f"an append needs {UPLOAD_OFFSET} and {UPLOAD_COMPLETE}", code=Code.INVALID_HEADER
            )
        source_id, upload_id, authorize = await self._c.upload(request)
        claim = await self._c.sessions.claim(source_id, upload_id)
        refused = failed_answer(claim)
        if refused is not None:
            return refused
        return await self._append(request, claim, version, complete, authorize, offset)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        self._require_version(request)
        source_id, upload_id, _ = await self._c.upload(request)
        claim = await self._c.sessions.claim(source_id, upload_id)
        await self._c.sessions.cancel(claim)
        return web.Response(status=204)

    def _require_version(self, request: web.Request) -> int:
        version = self.version(request)
        if version is None:
            raise BadRequest(
                f"{DRAFT_VERSION_HEADER} must be one of {sorted(self._versions)}",
                code=Code.UNSUPPORTED_INTEROP_VERSION,
            )
        return version

    def discovery(self) -> dict[str, str]:
        """The draft's part of an ``OPTIONS`` answer."""
        return {UPLOAD_LIMIT: f"max-size={self._c.sessions.max_size}"}


def _sha256_of(digest: tuple[str, bytes] | None) -> str | None:
    """The hex SHA-256 a ``Repr-Digest`` announces (the one digest completion computes)."""
    if digest is None or digest[0] != "sha256":
        return None
    return digest[1].hex()


def _content_type(request: web.Request) -> str | None:
    value = request.headers.get("Content-Type")
    if value is not None and value.split(";")[0].strip().lower() == PARTIAL_UPLOAD:
        return None
    return value


async def _interim_104(request: web.Request, version: int, location: str) -> None:
    """104 (Upload Resumption Supported) with the upload's URL, before the body is read."""
    if request.version < (1, 1):
        return
    head = (
        "HTTP/1.1 104 Upload Resumption Supported\r\n"
        f"{DRAFT_VERSION_HEADER}: {version}\r\nLocation: {location}\r\n\r\n"
    )
    await request.writer.write(head.encode())
    request.writer.output_size = 0
