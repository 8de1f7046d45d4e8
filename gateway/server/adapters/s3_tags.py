"""The tags ``S3Store`` keeps on archives: the sha256 of the version they describe, what the archive
check found, and the mark of an object held back from reads.

A resumable upload completed at the source's key before its bytes are checked is created *held*
(``HELD_TAG``, set when its multipart upload starts, so the object carries it from the moment it
exists): ``stat`` calls it missing, so no download, HEAD or deployment sees it, until
``set_sha256`` replaces the tags once it is checked. Needs s3:PutObjectTagging and
s3:GetObjectTagging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.errors import ObjectNotFound
from gateway.server.adapters.s3_resumable import S3Calls
from gateway.server.domain.storage import ObjectInfo

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import TagTypeDef


SHA256_TAG = "sha256"
# The ETag (without quotes: S3 tag values may not hold them) of the version the sha256 is of.
SHA256_ETAG_TAG = "sha256-etag"
# On an object not yet checked (a resumable upload completed where it belongs, then read back).
HELD_TAG = "gateway-held"
HELD_TAGGING = f"{HELD_TAG}=1"


def bare_etag(etag: str) -> str:
    return etag.strip('"')


class S3TagCalls(S3Calls):
    """``set_sha256`` and ``stat``, which read and write the tags."""

    async def set_sha256(
        self, key: str, sha256: str, etag: str, extra: Mapping[str, str] | None = None
    ) -> None:
        # The tag names the version it describes: two uploads of one source racing each other
        # may tag in the other order, and a tag of another version must then be ignored.
        tags: list[TagTypeDef] = [
            {"Key": SHA256_TAG, "Value": sha256},
            {"Key": SHA256_ETAG_TAG, "Value": bare_etag(etag)},
        ]
        tags.extend({"Key": k, "Value": v} for k, v in (extra or {}).items())
        await self._call(
            "PutObjectTagging",
            self._s3.put_object_tagging(Bucket=self._bucket, Key=key, Tagging={"TagSet": tags}),
        )

    async def stat(self, key: str, *, held: bool = False) -> ObjectInfo:
        head, tags = await asyncio.gather(
            self._call("HeadObject", self._s3.head_object(Bucket=self._bucket, Key=key)),
            self._call(
                "GetObjectTagging", self._s3.get_object_tagging(Bucket=self._bucket, Key=key)
            ),
        )
        return described(head, tags, held=held)


def described(head: Mapping[str, Any], tags: Mapping[str, Any], *, held: bool) -> ObjectInfo:
    """The object a HeadObject (or GetObject) answer and a GetObjectTagging answer describe, or
    ``ObjectNotFound`` for a held one unless ``held``."""
    tag = {t["Key"]: t["Value"] for t in tags["TagSet"]}
    if HELD_TAG in tag and not held:
        raise ObjectNotFound()
    etag = str(head["ETag"])
    this_version = tag.get(SHA256_ETAG_TAG) == bare_etag(etag)
    sha256 = tag.get(SHA256_TAG) if this_version else None
    mine = (SHA256_TAG, SHA256_ETAG_TAG, HELD_TAG)
    extra = {k: v for k, v in tag.items() if k not in mine}
    return ObjectInfo(
        size=int(head["ContentLength"]),
        etag=etag,
        last_modified=head["LastModified"],
        content_type=str(head.get("ContentType") or "application/gzip"),
        sha256=sha256,
        tags=extra if this_version else {},
        held=HELD_TAG in tag,
    )
