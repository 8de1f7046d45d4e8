"""The ``ObjectStore`` calls resumable uploads add, for ``S3Store`` (which inherits them).

Kept apart from ``s3.py`` so that module stays about streaming. Needs, besides what ``S3Store``
needs, s3:DeleteObject (tail and staging objects) and s3:GetObject on the source copied
(CopyObject).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

from botocore.exceptions import ClientError

from gateway.errors import ObjectNotFound, WriteConflict
from gateway.server.adapters.aws import error_code
from gateway.server.domain.storage import Buffer

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import (
        CompletedMultipartUploadTypeDef,
        CompletedPartTypeDef,
    )

T = TypeVar("T")
# Codes S3 gives a conditional write that lost (the key exists or changed, or a concurrent
# conditional write of the same key was in flight): ``WriteConflict``.
LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict"}


class S3Calls:
    """What ``S3Store``'s mixins (this module's, ``s3_tags``') call on it: the bucket, the
    client, and ``_call``, which translates a failed call into the gateway's errors."""

    _bucket: str

    @property
    def _s3(self) -> S3Client:
        raise NotImplementedError

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        raise NotImplementedError


class S3ResumableCalls(S3Calls):
    """Conditional create, completion with explicit part numbers, copy and delete."""

    async def _known_etag(self, key: str, etag: str) -> str:
        raise NotImplementedError

    async def create_bytes(self, key: str, data: Buffer, content_type: str) -> str:
        # Small objects (a tail is under one part): botocore's copy of the body costs little.
        call = self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=bytes(data),
            ContentType=content_type,
            IfNoneMatch="*",
        )
        resp = await self._conditional("PutObject", call)
        return str(resp["ETag"])

    async def complete_parts(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        *,
        if_absent: bool = False,
    ) -> str:
        listed: list[CompletedPartTypeDef] = [
            {"PartNumber": number, "ETag": etag} for number, etag in parts
        ]
        done: CompletedMultipartUploadTypeDef = {"Parts": listed}
        if if_absent:
            call = self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload=done,
                IfNoneMatch="*",
            )
        else:
            call = self._s3.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload=done
            )
        resp = await self._conditional("CompleteMultipartUpload", call)
        return await self._known_etag(key, str(resp.get("ETag") or ""))

    async def _conditional(self, operation: str, call: Awaitable[T]) -> T:
        """``call``, a conditional write: ``WriteConflict`` when its condition failed."""
        try:
            return await call
        except Exception as exc:
            if isinstance(exc, ClientError) and error_code(exc) in LOST_RACE:
                raise WriteConflict() from None
            return await self._call(operation, _raise(exc))  # translated as every call's

    async def copy(self, source: str, key: str, content_type: str) -> str:
        resp = await self._call(
            "CopyObject",
            self._s3.copy_object(
                Bucket=self._bucket,
                Key=key,
                CopySource={"Bucket": self._bucket, "Key": source},
                ContentType=content_type,
                MetadataDirective="REPLACE",
                TaggingDirective="REPLACE",
                Tagging="",
            ),
        )
        return await self._known_etag(key, str(resp["CopyObjectResult"].get("ETag") or ""))

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        if etag is None:
            await self._call("DeleteObject", self._s3.delete_object(Bucket=self._bucket, Key=key))
            return
        # S3 (since 2024), MinIO and moto honour If-Match on DeleteObject; a store that ignores
        # it removes whatever is there, which only a newer upload racing this one can be.
        call = self._s3.delete_object(Bucket=self._bucket, Key=key, IfMatch=etag)
        try:
            await self._conditional("DeleteObject", call)
        except ObjectNotFound:
            return


async def _raise(exc: Exception) -> NoReturn:
    """An awaitable that raises ``exc``: lets ``_call`` translate an error already caught."""
    raise exc
