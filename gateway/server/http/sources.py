"""HTTP handlers for sources: create, upload (PUT), download (GET, HEAD)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.config import Config
from gateway.errors import PayloadTooLarge
from gateway.ids import new_source_id
from gateway.server.domain.auth import Authenticator
from gateway.server.domain.described import DescribedReads
from gateway.server.domain.handover import Detachable, SocketRest
from gateway.server.domain.limits import UploadSlots
from gateway.server.domain.ranges import (
    attachment,
    download_headers,
    etag_matches,
    parse_range,
)
from gateway.server.domain.signing import Purpose, UrlSigner, VerifiedToken, creator_tag
from gateway.server.domain.sources import (
    CreatedSource,
    archive_of,
    object_key,
    rfc3339,
    stored_content_type,
)
from gateway.server.domain.storage import ObjectInfo, ObjectStore
from gateway.server.domain.uploads import SINGLE_PUT_LIMIT, Uploader, parse_content_md5
from gateway.server.http.archive_headers import archive_headers
from gateway.server.http.body import CLIENT_GONE, counted_body, read_json_object
from gateway.server.http.expect import send_continue
from gateway.server.http.splice import client_socket, relay
from gateway.server.http.streams import ClientStalled, cut_short, send_within, start_stream
from gateway.server.observability.access import tally_of
from gateway.server.observability.metrics import Metrics

log = logging.getLogger(__name__)

# Headers that make a download depend on what the object is: looked up before the body is asked.
_CONDITIONS = ("Range", "If-Range", "If-None-Match")


class SourceHandlers:
    """``POST /v1/sources``, ``PUT`` and ``GET``/``HEAD /v1/sources/{id}``."""

    def __init__(
        self,
        config: Config,
        auth: Authenticator,
        signer: UrlSigner,
        store: ObjectStore,
        uploader: Uploader,
        metrics: Metrics,
        upload_slots: UploadSlots | None = None,
    ) -> None:
        self._base_url = config.server.base_url
        self._answer = CreatedSource(self._base_url)
        self._prefix = config.storage.prefix
        self._max_size = config.sources.max_size_bytes
        self._body_timeout = config.server.body_timeout
        self._min_rate = config.server.min_upload_rate
        self._send_timeout = config.server.send_timeout
        self._redirect = config.sources.download_mode == "redirect"
        self._splice = config.sources.download_splice
        self._auth = auth
        self._signer = signer
        self._store = store
        self._uploader = uploader
        self._metrics = metrics
        self._slots = upload_slots

    async def create(self, request: web.Request) -> web.Response:
        identity = await self._auth.authenticate(request.headers.get("Authorization"))
        if request.body_exists:  # the CLI and most clients send none
            await read_json_object(request, allow_empty=True)
        signer = self._signer
        source_id = new_source_id()
        # One expiry for both tokens and the answer: it is signed into each token, and it is
        # when every instance stops accepting them.
        expires_at = signer.expiry()
        upload, download = signer.sign_all(source_id, expires_at, creator_tag(identity.name))
        return web.Response(
            text=self._answer.render(source_id, upload, download, rfc3339(expires_at)),
            status=201,
            content_type="application/json",
        )

    @property
    def upload_slots(self) -> UploadSlots | None:
        """The ``auth.limits.concurrent_uploads`` slots (resumable appends count in them)."""
        return self._slots

    def _verify(self, request: web.Request, purpose: Purpose) -> tuple[str, VerifiedToken]:
        source_id = request.match_info["id"]
        token = self._signer.verify(purpose, source_id, request.query.get("token"))
        return source_id, token

    async def upload(self, request: web.Request) -> web.Response:
        source_id, token = self._verify(request, Purpose.UPLOAD)
        if self._slots is None or token.created_by is None:
            # Tokens signed before the creator was signed in are not counted.
            return await self._upload(request, source_id)
        with self._slots.hold(token.created_by):
            return await self._upload(request, source_id)

    async def _upload(self, request: web.Request, source_id: str) -> web.Response:
        length = request.content_length
        if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            length = None
        if length is not None and length > self._max_size:
            raise PayloadTooLarge(f"upload is larger than the limit of {self._max_size} bytes")
        content_md5 = parse_content_md5(request.headers.get("Content-MD5"))
        content_type = stored_content_type(request.headers.get("Content-Type"))
        await send_continue(request)

        metrics = self._metrics
        metrics.transfers.labels("upload").inc()
        try:
            result = await self._uploader.upload(
                object_key(self._prefix, source_id),
                counted_body(
                    request, self._body_timeout, metrics.bytes_uploaded.inc, self._min_rate
                ),
                length=length,
                content_type=content_type,
                content_md5=content_md5,
            )
        except BaseException:
            metrics.uploads.labels("aborted").inc()
            raise
        finally:
            metrics.transfers.labels("upload").dec()
        metrics.uploads.labels("completed").inc()
        tally_of(request).outcome = "stored"
        assert length is None or length <= SINGLE_PUT_LIMIT or result.size == length
        answer: dict[str, object] = {"id": source_id, "size": result.size, "sha256": result.sha256}
        if result.archive is not None:  # absent when sources.archive_check is off
            answer["archive"] = result.archive.as_json()
        return web.json_response(
            answer,
            status=200,
            headers={"ETag": result.etag},
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        source_id, token = self._verify(request, Purpose.DOWNLOAD)
        key = object_key(self._prefix, source_id)
        store = self._store
        if self._whole_at_once(request) and isinstance(store, DescribedReads):
            # S3 is asked for the body before the headers go out, so a failure is still a JSON
            # error; the body is of the version described, else a 503.
            async with store.open(key) as (info, chunks):
                response = self._response(info, source_id, 200, info.size)
                await start_stream(request, response)
                await self._stream_object(request, response, key, chunks)
            return response
        info = await store.stat(key)

        if self._redirect:
            # The presigned URL dies no later than the token that let the client ask for it.
            remaining = int(token.expires_at - self._signer.now())
            location = await store.presign_get(key, max(1, remaining), attachment(source_id))
            raise web.HTTPTemporaryRedirect(
                location,
                headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"},
            )

        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and etag_matches(if_none_match, info.etag):
            return web.Response(status=304, headers=self._headers(info, source_id))

        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if if_range and if_range.strip() != info.etag:
            range_header = None  # the client's partial copy is stale: send everything
        byte_range = parse_range(range_header, info.size)
        status, (start, end) = (
            (200, (0, info.size - 1)) if byte_range is None else (206, byte_range)
        )
        response = self._response(info, source_id, status, end - start + 1)
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        if request.method == "HEAD" or end < start:
            await start_stream(request, response)
            await response.write_eof()
            return response
        async with contextlib.AsyncExitStack() as stack:
            # Pinned to the version the headers describe: a re-upload meanwhile is a 503.
            chunks = await stack.enter_async_context(store.read(key, start, end, info.etag))
            await start_stream(request, response)
            await self._stream_object(request, response, key, chunks)
        return response

    def _whole_at_once(self, request: web.Request) -> bool:
        """A plain GET: the whole object, whatever its version, opened with its description."""
        if request.method != "GET" or self._redirect:
            return False
        return not any(name in request.headers for name in _CONDITIONS)

    @staticmethod
    def _headers(info: ObjectInfo, source_id: str) -> dict[str, str]:
        headers = download_headers(info, source_id)
        archive = archive_of(info)
        if archive is not None:
            headers.update(archive_headers(archive))
        return headers

    def _response(
        self, info: ObjectInfo, source_id: str, status: int, length: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=self._headers(info, source_id))
        response.content_type = info.content_type
        response.content_length = length
        return response

    def _handover(self, request: web.Request, chunks: AsyncIterator[bytes]) -> SocketRest | None:
        """The rest of the body as the store's socket, when it can be spliced to the client's."""
        if not self._splice or not isinstance(chunks, Detachable):
            return None
        if client_socket(request) is None:
            return None
        return chunks.detach()

    async def _stream_object(
        self,
        request: web.Request,
        response: web.StreamResponse,
        key: str,
        chunks: AsyncIterator[bytes],
    ) -> None:
        metrics = self._metrics
        metrics.transfers.labels("download").inc()
        try:
            rest = self._handover(request, chunks)
            metrics.download_relays.labels("copy" if rest is None else "splice").inc()
            if rest is not None:
                await relay(
                    request, response, rest, self._send_timeout, metrics.bytes_downloaded.inc
                )
            else:
                async for chunk in chunks:
                    await send_within(response, chunk, self._send_timeout)
                    metrics.bytes_downloaded.inc(len(chunk))
            await response.write_eof()
        except CLIENT_GONE:
            tally_of(request).outcome = "client_disconnected"
        except ClientStalled:
            tally_of(request).outcome = "send_timeout"
            metrics.send_timeouts.inc()
            log.warning(
                "download of %s given up: the client took nothing for %gs", key, self._send_timeout
            )
            # What is buffered will not be read: drop it rather than wait to flush it.
            cut_short(request, response, flush=False)
        except Exception as exc:
            tally_of(request).outcome = "upstream_failed"
            log.warning("download of %s failed mid-stream: %s", key, type(exc).__name__)
            cut_short(request, response, flush=True)
        finally:
            metrics.transfers.labels("download").dec()
