"""``ObjectStore`` on an S3 bucket through aiobotocore.

``S3Store`` needs these IAM permissions on the bucket (see ``deploy/iam-policy.json``):
s3:PutObject, s3:GetObject, s3:PutObjectTagging, s3:GetObjectTagging, s3:AbortMultipartUpload,
s3:ListBucket (HeadBucket for readiness, and HeadObject answering 404 rather than 403), and, for
lifecycle management only, s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from gateway.config import StorageConfig
from gateway.errors import (
    BadGateway,
    GatewayError,
    ObjectChanged,
    ObjectNotFound,
    StorageFailed,
    StorageUnavailable,
)
from gateway.retry import RetryPolicy
from gateway.server.adapters.aws import error_code
from gateway.server.adapters.outbound import Connections, socket_reads_of
from gateway.server.adapters.s3_body import S3Body
from gateway.server.adapters.s3_resumable import S3ResumableCalls
from gateway.server.adapters.s3_tags import HELD_TAGGING, S3TagCalls, bare_etag, described
from gateway.server.domain.storage import Buffer, ObjectInfo

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import (
        CompletedPartTypeDef,
        GetObjectRequestTypeDef,
    )

log = logging.getLogger(__name__)

READ_CHUNK_SIZE = 1024 * 1024  # a download's pieces, read and written: see socket_reads_of

# Statuses after which a part is sent again (S3's throttling and transient server errors).
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
# A part sent again (storage.max_attempts in all): S3 answers a throttled or failed part within
# milliseconds, so a few short waits ride out a blip without holding the client's upload long.
PART_BASE_DELAY = 0.1
PART_MAX_DELAY = 2.0
# Pieces a part is written to the socket in; aiohttp warns of one large bytes body.
_SEND_SLICE = 1024 * 1024

T = TypeVar("T")


async def _slices(data: Buffer) -> AsyncIterator[memoryview]:
    """``data`` as an async body in pieces, without copying it."""
    view = memoryview(data)
    for start in range(0, len(view), _SEND_SLICE):
        yield view[start : start + _SEND_SLICE]


class _SendWatch:
    """Gives up a request whose body S3 stops taking for ``limit`` seconds.

    aiohttp's client times reads only: while it writes a request body, a peer that stopped
    reading would keep it waiting for ever. Time spent waiting for the body's *source* (a slow
    client uploading through the gateway) does not count, only time blocked on sending."""

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._blocked_since: float | None = None

    async def body(self, source: AsyncIterable[T]) -> AsyncIterator[T]:
        loop = asyncio.get_running_loop()
        async for chunk in source:
            self._blocked_since = loop.time()  # until aiohttp asks for the next piece
            yield chunk
            self._blocked_since = None

    async def run(self, call: Awaitable[T]) -> T:
        """Await ``call``; ``StorageUnavailable`` if sending stays blocked past the limit."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(call)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._limit / 4)
                if done:
                    return task.result()
                since = self._blocked_since
                if since is not None and loop.time() - since > self._limit:
                    task.cancel()
                    await asyncio.wait({task})
                    raise StorageUnavailable("storage stopped accepting data, try again later")
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})


_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}


def translate(exc: Exception, operation: str) -> GatewayError:
    """Turn a botocore or aiohttp failure into the gateway error a client should see."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in _NOT_FOUND_CODES:
            return ObjectNotFound()
        if code == "PreconditionFailed":  # a read of one version (If-Match) found it replaced
            return ObjectChanged()
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        log.warning("storage %s failed: %s (HTTP %s)", operation, code, status)
        if status in (500, 503) or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return StorageUnavailable("storage is unavailable, try again later")
        return StorageFailed("storage error")
    log.warning("storage %s failed: %s", operation, type(exc).__name__)
    return StorageUnavailable("storage is unreachable, try again later")


# What an S3 call fails with besides our own errors: one tuple for every S3 call of ours.
S3_FAILURES = (ClientError, BotoCoreError, BotoConnectionError, aiohttp.ClientError, TimeoutError)


class S3Store(S3ResumableCalls, S3TagCalls):
    """``ObjectStore`` on an S3 bucket (AWS, MinIO, Ceph, R2, moto) through one aiobotocore client.

    Streamed single PUTs and parts go through the outbound aiohttp session to presigned URLs,
    because botocore only sends bodies it can seek.
    """

    def __init__(
        self,
        connections: Connections,
        config: StorageConfig,
        on_error: Callable[[str], None] = lambda operation: None,
    ) -> None:
        self._connections = connections
        self._bucket = config.bucket
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )
        self._on_error = on_error
        self._retry = RetryPolicy(
            attempts=config.max_attempts, base_delay=PART_BASE_DELAY, max_delay=PART_MAX_DELAY
        )
        self._send_limit = config.read_timeout

    @property
    def _s3(self) -> S3Client:
        return self._connections.s3

    @property
    def _http(self) -> aiohttp.ClientSession:
        return self._connections.http

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except S3_FAILURES as exc:
            error = translate(exc, operation)
            if not isinstance(error, ObjectNotFound):
                self._on_error(operation)
            raise error from None

    async def put_stream(
        self, key: str, body: AsyncIterable[bytes], length: int, content_type: str
    ) -> str:
        url = await self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=3600,
        )
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        etag = await self._stream("PutObject", url, body, headers)
        return await self._known_etag(key, etag)

    async def stream_part(
        self, key: str, upload_id: str, number: int, body: AsyncIterable[Buffer], length: int
    ) -> str:
        url = await self._part_url(key, upload_id, number)
        return await self._stream("UploadPart", url, body, {"Content-Length": str(length)})

    async def _stream(
        self,
        operation: str,
        url: str,
        body: AsyncIterable[Buffer],
        headers: dict[str, str],
    ) -> str:
        """PUT ``body`` to ``url`` as it comes (once: it cannot be sent again); the ETag."""
        failure: list[BaseException] = []

        async def guarded() -> AsyncIterator[Buffer]:
            # aiohttp wraps whatever the body raises in ClientConnectionError; keep the original.
            try:
                async for chunk in body:
                    yield chunk
            except BaseException as exc:
                failure.append(exc)
                raise

        watch = _SendWatch(self._send_limit)

        async def send() -> str:
            async with self._http.put(
                url, data=watch.body(guarded()), headers=headers, timeout=self._timeout
            ) as resp:
                text = await resp.text()
                if resp.status != 200:
                    self._on_error(operation)
                    log.warning("storage %s failed: HTTP %s %s", operation, resp.status, text[:200])
                    if resp.status in (500, 503):
                        raise StorageUnavailable("storage is unavailable, try again later")
                    raise StorageFailed("storage error")
                return resp.headers.get("ETag", "")

        try:
            return await watch.run(send())
        except StorageUnavailable:
            self._on_error(operation)
            raise
        except (aiohttp.ClientError, TimeoutError) as exc:
            if failure:
                raise failure[0] from None
            raise translate(exc, operation) from None

    async def _part_url(self, key: str, upload_id: str, number: int) -> str:
        url = await self._s3.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self._bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number,
            },
            ExpiresIn=3600,
        )
        return str(url)

    async def put_bytes(self, key: str, data: Buffer, content_type: str) -> str:
        # Sent like a part (below): no copy of the body for botocore, the same retries.
        url = await self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=3600,
        )
        headers = {"Content-Type": content_type, "Content-Length": str(len(data))}
        etag = await self._put_presigned("PutObject", url, data, headers)
        return await self._known_etag(key, etag)

    async def create_multipart(self, key: str, content_type: str, *, held: bool = False) -> str:
        if held:
            call = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType=content_type, Tagging=HELD_TAGGING
            )
        else:
            call = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=key, ContentType=content_type
            )
        resp = await self._call("CreateMultipartUpload", call)
        return str(resp["UploadId"])

    async def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> str:
        # A presigned PUT sent by aiohttp, like put_stream: botocore would hash the body for its
        # signature (on http endpoints), add a CRC32 and copy it through a thread, which made a
        # chunked upload cost 3.8 CPU seconds per GiB against 1.4 for a streamed PUT (BENCHMARKS).
        url = await self._part_url(key, upload_id, number)
        return await self._put_presigned(
            "UploadPart", url, data, {"Content-Length": str(len(data))}
        )

    async def _put_presigned(
        self, operation: str, url: str, data: Buffer, headers: dict[str, str]
    ) -> str:
        """PUT ``data`` (in memory, so it can be sent again) to ``url``; return the ETag."""
        async for attempt in self._retry.tries():
            watch = _SendWatch(self._send_limit)
            try:
                resp, text = await watch.run(self._send(url, watch.body(_slices(data)), headers))
                if resp.status == 200:
                    return resp.headers.get("ETag", "")
                log.warning("storage %s failed: HTTP %s %s", operation, resp.status, text[:200])
                if resp.status not in _RETRYABLE_STATUS:
                    self._on_error(operation)
                    raise StorageFailed("storage error")
                error: GatewayError = StorageUnavailable("storage is unavailable, try again later")
            except StorageUnavailable as exc:
                error = exc  # S3 stopped taking the body: sent again, like any transient failure
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = translate(exc, operation)
            if attempt == self._retry.attempts:
                self._on_error(operation)
                raise error
        raise AssertionError("a retry policy makes at least one attempt")

    async def _send(
        self, url: str, body: AsyncIterable[memoryview], headers: dict[str, str]
    ) -> tuple[aiohttp.ClientResponse, str]:
        async with self._http.put(url, data=body, headers=headers, timeout=self._timeout) as resp:
            return resp, await resp.text()

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> str:
        parts: list[CompletedPartTypeDef] = [
            {"PartNumber": i, "ETag": etag} for i, etag in enumerate(etags, start=1)
        ]
        resp = await self._call(
            "CompleteMultipartUpload",
            self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            ),
        )
        return await self._known_etag(key, str(resp.get("ETag") or ""))

    async def _known_etag(self, key: str, etag: str) -> str:
        """``etag``, or when the store answered none (some S3 implementations complete a multipart
        upload with an empty ETag), the one HeadObject reports for the object just written."""
        if bare_etag(etag):
            return etag
        head = await self._call("HeadObject", self._s3.head_object(Bucket=self._bucket, Key=key))
        etag = str(head.get("ETag") or "")
        if not bare_etag(etag):
            raise BadGateway("the object store reports no ETag for the stored archive")
        return etag

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._call(
            "AbortMultipartUpload",
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id),
        )

    @contextlib.asynccontextmanager
    async def read(
        self, key: str, start: int, end: int, etag: str | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        params: GetObjectRequestTypeDef = {
            "Bucket": self._bucket,
            "Key": key,
            "Range": f"bytes={start}-{end}",
        }
        if etag is not None:
            params["IfMatch"] = etag
        resp = await self._call("GetObject", self._s3.get_object(**params))
        # Closed on the way out (aiobotocore's body closes its response): a connection whose body
        # was not read to its end, or handed over (S3Body.detach), never returns to the pool.
        async with resp["Body"] as body:
            with socket_reads_of(body.raw_stream, READ_CHUNK_SIZE):
                size = end - start + 1
                yield S3Body(body.raw_stream, size, self._send_limit, self._read_failed)

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[tuple[ObjectInfo, AsyncIterator[bytes]]]:
        # GetObject's answer describes the object as HeadObject's does (stat without it): the
        # tags are judged against the version whose bytes come, and the first byte comes a round
        # trip sooner.
        tagging = asyncio.ensure_future(
            self._call(
                "GetObjectTagging", self._s3.get_object_tagging(Bucket=self._bucket, Key=key)
            )
        )
        try:
            resp = await self._call("GetObject", self._s3.get_object(Bucket=self._bucket, Key=key))
        except BaseException:
            tagging.cancel()
            await asyncio.gather(tagging, return_exceptions=True)
            raise
        async with resp["Body"] as body:
            info = described(resp, await tagging, held=False)
            with socket_reads_of(body.raw_stream, READ_CHUNK_SIZE):
                yield info, S3Body(body.raw_stream, info.size, self._send_limit, self._read_failed)

    def _read_failed(self, exc: Exception) -> Exception:
        self._on_error("GetObject")
        return translate(exc, "GetObject")

    async def presign_get(
        self, key: str, expires_in: int, content_disposition: str | None = None
    ) -> str:
        params = {"Bucket": self._bucket, "Key": key}
        if content_disposition is not None:
            # S3's response-content-disposition override, signed into the URL.
            params["ResponseContentDisposition"] = content_disposition
        url = await self._s3.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_in
        )
        return str(url)

    async def check(self) -> None:
        await self._call("HeadBucket", self._s3.head_bucket(Bucket=self._bucket))
