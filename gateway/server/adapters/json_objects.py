"""Small JSON objects in the bucket, with S3's conditional writes: what deployment records need.

Conditional writes (``If-None-Match: *`` to create only, ``If-Match: <etag>`` to replace only the
version read) are what make the records safe with several gateway instances writing at once:
S3 (since 2024), MinIO, R2 and moto all honour them on PutObject.
Needs s3:PutObject, s3:GetObject and s3:ListBucket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from gateway.errors import ObjectNotFound, WriteConflict
from gateway.server.adapters.outbound import Connections
from gateway.server.adapters.s3 import S3_FAILURES, translate
from gateway.server.adapters.s3_resumable import LOST_RACE
from gateway.server.domain.storage import MAX_KEYS, JsonObjects, KeyPage

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import (
        ListObjectsV2RequestTypeDef,
        PutObjectRequestTypeDef,
    )

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["MAX_KEYS", "JsonObjects", "KeyPage", "S3JsonObjects"]


class S3JsonObjects:
    """``JsonObjects`` on the gateway's bucket through its aiobotocore client (opened by
    ``connections`` while the app runs)."""

    def __init__(self, connections: Connections, bucket: str) -> None:
        self._connections = connections
        self._bucket = bucket

    @property
    def _s3(self) -> S3Client:
        return self._connections.s3

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in LOST_RACE:
                raise WriteConflict() from None
            raise translate(exc, operation) from None
        except S3_FAILURES as exc:
            raise translate(exc, operation) from None

    async def put_json(
        self, key: str, value: Any, *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        params: PutObjectRequestTypeDef = {
            "Bucket": self._bucket,
            "Key": key,
            "Body": json.dumps(value, separators=(",", ":")).encode(),
            "ContentType": "application/json",
        }
        if if_absent:
            params["IfNoneMatch"] = "*"
        if if_match is not None:
            params["IfMatch"] = if_match
        resp = await self._call("PutObject", self._s3.put_object(**params))
        return str(resp["ETag"])

    async def get_json(self, key: str) -> tuple[Any, str]:
        resp = await self._call("GetObject", self._s3.get_object(Bucket=self._bucket, Key=key))
        async with resp["Body"] as body:
            try:
                raw = await body.read()
            except S3_FAILURES as exc:
                raise translate(exc, "GetObject") from None
        try:
            return json.loads(raw), str(resp["ETag"])
        except ValueError:
            log.warning("storage object %s is not JSON; treated as missing", key)
            raise ObjectNotFound() from None

    async def list_keys(
        self, prefix: str, start_after: str | None = None, max_keys: int = MAX_KEYS
    ) -> KeyPage:
        params: ListObjectsV2RequestTypeDef = {
            "Bucket": self._bucket,
            "Prefix": prefix,
            "MaxKeys": max_keys,
        }
        if start_after:
            params["StartAfter"] = start_after
        resp = await self._call("ListObjectsV2", self._s3.list_objects_v2(**params))
        keys = [str(item["Key"]) for item in resp.get("Contents", [])]
        return KeyPage(keys, bool(resp.get("IsTruncated")))
