"""Deployment records and their events, kept in the bucket so every instance sees the same thing.

Keys under ``deployments.prefix`` (P), all covered by the deployments lifecycle rule:

    P{app}/{id}/deployment.json          the record; replaced only with If-Match on its ETag
    P{app}/{id}/ids/, log/, chunks/      the event log (``event_log`` here)
    P{app}/index/{inverted:013d}-{id}    a marker whose name sorts newest first

What the records mean is the domain's business; this module only knows where they are and how
to write them safely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from gateway.errors import DeploymentNotFound, ObjectNotFound, StorageUnavailable, WriteConflict
from gateway.retry import RetryPolicy
from gateway.server.domain.deployments.records import Record
from gateway.server.domain.storage import JsonObjects

log = logging.getLogger(__name__)

T = TypeVar("T")
# Reads of small objects in flight at once for one request (a page, an output).
READ_CONCURRENCY = 16
# Rounds of read-change-write before a record update gives up (others kept changing it). Each
# lost round means another writer won, and a change that another made moot ends the loop, so
# this only runs out when far more writers than a deployer's concurrency race for one record.
# Before reading the record again after losing a race, a pause of up to 20 ms, all of it random
# (jitter 1), so the losers do not all come back at the same moment.
UPDATE_RETRY = RetryPolicy(attempts=32, base_delay=0.02, max_delay=0.02, jitter=1.0)
# Milliseconds since the epoch are subtracted from this so that newer names sort first.
_INVERT_FROM = 10**13
_INVERTED_DIGITS = 13


async def bounded(calls: Iterable[Awaitable[T]], limit: int = READ_CONCURRENCY) -> list[T]:
    """Await ``calls`` with at most ``limit`` in flight; results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with semaphore:
            return await call

    return list(await asyncio.gather(*(one(call) for call in calls)))


class RecordStore:
    """Where records, events and the newest-first index live, and how they are written."""

    def __init__(self, objects: JsonObjects, prefix: str) -> None:
        self._objects = objects
        self._prefix = prefix

    def record_key(self, app: str, deployment_id: str) -> str:
        return f"{self._prefix}{app}/{deployment_id}/deployment.json"

    def _index_prefix(self, app: str) -> str:
        return f"{self._prefix}{app}/index/"

    def _index_key(self, app: str, deployment_id: str, created: float) -> str:
        inverted = _INVERT_FROM - int(created * 1000)
        return f"{self._index_prefix(app)}{inverted:0{_INVERTED_DIGITS}d}-{deployment_id}"

    async def create(
        self, app: str, deployment_id: str, record: Mapping[str, Any], created: float
    ) -> None:
        """Store a new record (``created``: seconds since the epoch) and its index marker."""
        await self._objects.put_json(self.record_key(app, deployment_id), record, if_absent=True)
        await self._objects.put_json(
            self._index_key(app, deployment_id, created), {"id": deployment_id}
        )

    async def read(self, app: str, deployment_id: str) -> tuple[Record, str]:
        """The record and its ETag, or ``DeploymentNotFound``."""
        try:
            record, etag = await self._objects.get_json(self.record_key(app, deployment_id))
        except ObjectNotFound:
            raise DeploymentNotFound() from None
        return dict(record), etag

    async def _read_or_none(self, app: str, deployment_id: str) -> Record | None:
        try:
            record, _ = await self.read(app, deployment_id)
        except DeploymentNotFound:
            return None  # expired between the listing and the read
        return record

    async def update(
        self,
        app: str,
        deployment_id: str,
        change: Callable[[Record], Record | None],
        record: Record,
        etag: str,
    ) -> None:
        """Write ``change(record)`` (None: nothing to write) with If-Match on ``etag``; when
        another instance replaced the record meanwhile, read it again and re-apply ``change``."""
        key = self.record_key(app, deployment_id)

        async def once(attempt: int) -> None:
            nonlocal record, etag
            if attempt > 1:
                record, etag = await self.read(app, deployment_id)
            updated = change(record)
            if updated is not None:
                await self._objects.put_json(key, updated, if_match=etag)

        try:
            await UPDATE_RETRY.call(once, retry_on=(WriteConflict,))
        except WriteConflict:
            log.warning("deployment %s: record kept changing, update given up", deployment_id)
            raise StorageUnavailable("the deployment record is busy, try again later") from None

    async def page(self, app: str, start: int, stop: int) -> tuple[list[Record], int]:
        """Records ``start`` to ``stop`` (exclusive) of the app's, newest first, and the total."""
        prefix = self._index_prefix(app)
        keys = await self._all_keys(prefix)
        skip = len(prefix) + _INVERTED_DIGITS + 1
        ids = [key[skip:] for key in keys[start:stop]]
        found = await bounded(self._read_or_none(app, deployment_id) for deployment_id in ids)
        return [record for record in found if record is not None], len(keys)

    async def newest(self, app: str, count: int) -> list[tuple[str, float]]:
        """The app's ``count`` newest deployments, newest first, as (id, creation time in seconds
        since the epoch): ONE listing of the index, whose names hold both."""
        prefix = self._index_prefix(app)
        listed = await self._objects.list_keys(prefix, None, max_keys=count)
        found = []
        for key in listed.keys:
            inverted, _, deployment_id = key[len(prefix) :].partition("-")
            if inverted.isdigit() and deployment_id:
                found.append((deployment_id, (_INVERT_FROM - int(inverted)) / 1000))
        return found

    async def _all_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        while True:
            listed = await self._objects.list_keys(prefix, keys[-1] if keys else None)
            keys.extend(listed.keys)
            if not listed.truncated or not listed.keys:
                return keys
