"""What the two resumable-upload protocols share in the HTTP layer: tokens, the resource's URL,
the request body, availability, and which protocol a request speaks.

The protocols themselves are ``gateway.server.http.tus`` and ``gateway.server.http.upload_draft``,
each a thin adapter over ``gateway.server.domain.resumable.UploadSessions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from aiohttp import web

from gateway.error_codes import Code
from gateway.errors import (
    BadRequest,
    ResumableUnavailable,
    TokenExpired,
    UploadNotFound,
)
from gateway.paths import UPLOAD
from gateway.server.domain.limits import UploadSlots
from gateway.server.domain.resumable import UploadSessions
from gateway.server.domain.resumable_finish import Authorize, Claim
from gateway.server.domain.resume_token import ResumeTokens
from gateway.server.domain.signing import Purpose, UrlSigner
from gateway.server.domain.upload_state import UploadState
from gateway.server.http.body import counted_body
from gateway.server.observability.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DRAFT_VERSION_HEADER = "Upload-Draft-Interop-Version"
TUS_HEADER = "Tus-Resumable"
# How long a resumable request waits at most for the start's conditional-write probe.
PROBE_WAIT = 5.0
# The largest integer a length or offset header may hold (far past any archive; keeps int()
# of a hostile header cheap).
MAX_INTEGER_DIGITS = 19


class Availability:
    """Whether resumable uploads are served: on in the config, and the store honours
    conditional writes (probed in the background at start: the gateway serves meanwhile)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.conditional_writes: bool | None = None  # None: not probed (yet)
        self.probing: asyncio.Future[None] | None = None

    async def require(self) -> None:
        if self.enabled and self.conditional_writes is None and self.probing is not None:
            # A request right after start waits for the verdict, a little: a store that
            # hangs must not hold every resumable request.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.probing), PROBE_WAIT)
        if not self.enabled:
            raise ResumableUnavailable("resumable uploads are turned off on this gateway")
        if self.conditional_writes is False:
            raise ResumableUnavailable(
                "resumable uploads need a store with conditional writes (If-Match), which this "
                "one does not honour; use a plain PUT"
            )


@dataclass
class ResumableHttp:
    """The collaborators both protocol adapters use."""

    sessions: UploadSessions
    signer: UrlSigner
    tokens: ResumeTokens
    base_url: str
    body_timeout: float
    metrics: Metrics
    available: Availability
    # The plain uploads' slots (auth.limits.concurrent_uploads), shared; None: no limit.
    slots: UploadSlots | None = None

    async def source(self, request: web.Request) -> tuple[str, str | None]:
        """The source id of an ``upload_url`` request whose token allows creating uploads, and
        the token's creator tag (whose uploads ``auth.limits.concurrent_uploads`` counts)."""
        await self.available.require()
        source_id = request.match_info["id"]
        token = self.signer.verify(Purpose.UPLOAD, source_id, request.query.get("token"))
        return source_id, token.created_by

    def holding(self, state: UploadState) -> AbstractContextManager[None]:
        """One of ``auth.limits.concurrent_uploads`` for a request that sends an upload's bytes,
        counted with the plain uploads of sources the same identity created (429 past it)."""
        if self.slots is None or state.created_by is None:
            return contextlib.nullcontext()
        return self.slots.hold(state.created_by)

    async def upload(self, request: web.Request) -> tuple[str, str, Authorize]:
        """The source and upload ids of a request on an upload resource whose resume token is
        good, and the check to run again when the upload completes."""
        await self.available.require()
        source_id, upload_id = request.match_info["id"], request.match_info["uid"]
        authorize = self.authorizer(source_id, upload_id, request.query.get("token"))
        authorize()
        return source_id, upload_id, authorize

    def authorizer(self, source_id: str, upload_id: str, token: str | None) -> Authorize:
        """The check of resume token ``token``: ``UploadNotFound`` once it expired (the upload's
        life is over with it), ``TokenInvalid`` if it is not this upload's."""

        def authorize() -> None:
            try:
                self.tokens.verify(source_id, upload_id, token)
            except TokenExpired:
                raise UploadNotFound() from None

        return authorize

    def resume_token(self, claim: Claim) -> str:
        state = claim.state
        return self.tokens.sign(state.source_id, state.upload_id, state.expires_at)

    def location(self, claim: Claim, token: str) -> str:
        """The upload resource's absolute URL (clients resolve a relative one against the
        endpoint and lose its query string)."""
        state = claim.state
        path = UPLOAD.format(id=state.source_id, uid=state.upload_id)
        return f"{self.base_url}{path}?token={token}"

    def body(self, request: web.Request) -> AsyncIterator[bytes]:
        return counted_body(request, self.body_timeout, self.metrics.bytes_uploaded.inc)


def body_length(request: web.Request) -> int | None:
    """The body's declared length; None for a chunked body."""
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return None
    return request.content_length


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def integer_header(request: web.Request, name: str) -> int | None:
    """A non-negative integer header, or None when absent; ``BadRequest`` when malformed."""
    value = request.headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or not value.isascii() or len(value) > MAX_INTEGER_DIGITS:
        raise BadRequest(f"{name} must be a non-negative integer", code=Code.INVALID_HEADER)
    return int(value)


def failed_answer(claim: Claim) -> web.Response | None:
    """The error a completed-but-refused upload keeps answering, or None."""
    error = claim.state.error
    if claim.state.status != "failed" or error is None:
        return None
    return web.json_response(error["body"], status=int(error["status"]))


def finished(claim: Claim) -> dict[str, object] | None:
    """The usual upload answer (``{"id", "size", "sha256", ...}``) once complete, else None."""
    answer = claim.state.answer
    if claim.state.status != "done" or answer is None:
        return None
    body: dict[str, object] = answer["body"]
    return body


def protocol_dispatch(plain: Handler, tus: Handler | None, draft: Handler) -> Handler:
    """One handler for a method both the plain upload (or tus) and the draft use: the draft's
    requests carry ``Upload-Draft-Interop-Version``; tus's ``Tus-Resumable``."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        headers = request.headers
        if DRAFT_VERSION_HEADER in headers:
            return await draft(request)
        if tus is not None and TUS_HEADER in headers:
            return await tus(request)
        return await plain(request)

    return dispatch
