"""Where a deployment's event log lives in the bucket, and how it is read in few requests.

Keys under the deployment's folder ``P{app}/{id}/`` (see ``records``):

    ids/{n:010d}.json       the claim on the deployer's event number n: its digest, the log slot
                            it was claimed at (every entry of it lies after), then its slot
    log/{s:010d}.json       log slot s: one event and the deployment's state after it; created
                            once, with If-None-Match: *, and never removed (the slots are what
                            writers race for)
    chunks/{c:06d}.json     slots c*CHUNK_EVENTS+1 .. (c+1)*CHUNK_EVENTS in one object, written
                            once they are all taken, so a whole log reads in a bounded number of
                            requests

The log has no gaps (slot s is only written by someone who read slot s-1), so a listing of
``log/`` tells which chunks are complete. What the entries mean is the domain's business.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from gateway.errors import ObjectNotFound, WriteConflict
from gateway.server.adapters.deployments.records import bounded
from gateway.server.domain.deployments.event_log import Entry
from gateway.server.domain.storage import JsonObjects

_SLOT_DIGITS = 10


class EventLogStore:
    """Claims, log slots and chunks of the deployments under ``prefix``."""

    def __init__(self, objects: JsonObjects, prefix: str, chunk_events: int) -> None:
        self._objects = objects
        self._prefix = prefix
        self.chunk_events = chunk_events

    def _folder(self, app: str, deployment_id: str) -> str:
        return f"{self._prefix}{app}/{deployment_id}/"

    def _claim_key(self, app: str, deployment_id: str, number: int) -> str:
        return f"{self._folder(app, deployment_id)}ids/{number:010d}.json"

    def _log_prefix(self, app: str, deployment_id: str) -> str:
        return f"{self._folder(app, deployment_id)}log/"

    def _slot_key(self, app: str, deployment_id: str, slot: int) -> str:
        return f"{self._log_prefix(app, deployment_id)}{slot:0{_SLOT_DIGITS}d}.json"

    def _chunk_key(self, app: str, deployment_id: str, chunk: int) -> str:
        return f"{self._folder(app, deployment_id)}chunks/{chunk:06d}.json"

    async def _get(self, key: str) -> Any:
        try:
            value, _ = await self._objects.get_json(key)
        except ObjectNotFound:
            return None
        return value

    # Claims -------------------------------------------------------------------------------

    async def claim(
        self, app: str, deployment_id: str, number: int, claim: Mapping[str, Any]
    ) -> Entry | None:
        """Create the claim on event ``number``: None when created, else the claim already
        there (None again if it vanished meanwhile: only the lifecycle rule removes claims)."""
        key = self._claim_key(app, deployment_id, number)
        try:
            await self._objects.put_json(key, claim, if_absent=True)
        except WriteConflict:
            found = await self._get(key)
            return dict(found) if found is not None else None
        return None

    async def get_claim(self, app: str, deployment_id: str, number: int) -> Entry | None:
        found = await self._get(self._claim_key(app, deployment_id, number))
        return dict(found) if found is not None else None

    async def settle_claim(
        self, app: str, deployment_id: str, number: int, claim: Mapping[str, Any]
    ) -> None:
        """Record the slot an event took in its claim (everyone who writes it writes the same)."""
        await self._objects.put_json(self._claim_key(app, deployment_id, number), claim)

    # Log slots ----------------------------------------------------------------------------

    async def put_entry(self, app: str, deployment_id: str, entry: Mapping[str, Any]) -> bool:
        """Create ``entry``'s slot; False (nothing written) when another writer took it first."""
        key = self._slot_key(app, deployment_id, int(entry["slot"]))
        try:
            await self._objects.put_json(key, entry, if_absent=True)
        except WriteConflict:
            return False
        return True

    async def get_entry(self, app: str, deployment_id: str, slot: int) -> Entry | None:
        found = await self._get(self._slot_key(app, deployment_id, slot))
        return dict(found) if found is not None else None

    async def slots_after(self, app: str, deployment_id: str, after: int) -> list[int]:
        """The taken slots above ``after``, in order (one listing per 1,000)."""
        prefix = self._log_prefix(app, deployment_id)
        start: str | None = self._slot_key(app, deployment_id, after) if after else None
        slots: list[int] = []
        while True:
            listed = await self._objects.list_keys(prefix, start)
            slots.extend(int(key[len(prefix) : len(prefix) + _SLOT_DIGITS]) for key in listed.keys)
            if not listed.truncated or not listed.keys:
                return slots
            start = listed.keys[-1]

    async def head_slot(self, app: str, deployment_id: str, after: int) -> int:
        """The last taken slot (``after`` when none is above it) in at most three listings
        however long the log: the log after ``after``; when that is not all of it, the chunks,
        then the log after the last chunk (every slot below a chunk's end is taken)."""
        prefix = self._log_prefix(app, deployment_id)
        start = self._slot_key(app, deployment_id, after) if after else None
        listed = await self._objects.list_keys(prefix, start)
        if not listed.keys:
            return after
        last = int(listed.keys[-1][len(prefix) : len(prefix) + _SLOT_DIGITS])
        if not listed.truncated:
            return last
        folder = f"{self._folder(app, deployment_id)}chunks/"
        chunks = await self._objects.list_keys(folder)
        if chunks.keys:
            chunk = int(chunks.keys[-1][len(folder) : len(folder) + 6])
            last = max(last, (chunk + 1) * self.chunk_events)
        slots = await self.slots_after(app, deployment_id, last)
        return slots[-1] if slots else last

    async def entries_after(self, app: str, deployment_id: str, after: int) -> list[Entry]:
        """Every entry above slot ``after``, in slot order: complete chunks one GET each, the
        open chunk at the head one GET per entry."""
        head = await self.head_slot(app, deployment_id, after)
        groups: dict[int, list[int]] = {}
        for slot in range(after + 1, head + 1):
            groups.setdefault((slot - 1) // self.chunk_events, []).append(slot)
        parts = await bounded(
            self._read_group(app, deployment_id, chunk, group, head)
            for chunk, group in groups.items()
        )
        return [entry for part in parts for entry in part if int(entry["slot"]) > after]

    async def _read_group(
        self, app: str, deployment_id: str, chunk: int, slots: list[int], head: int
    ) -> list[Entry]:
        if (chunk + 1) * self.chunk_events <= head:
            found = await self._get(self._chunk_key(app, deployment_id, chunk))
            if found is not None:
                return [dict(entry) for entry in found["entries"]]
        loose = await bounded(self.get_entry(app, deployment_id, slot) for slot in slots)
        return [entry for entry in loose if entry is not None]

    async def compact(self, app: str, deployment_id: str, chunk: int) -> None:
        """Write chunk ``chunk`` from its slots, all taken (a chunk already there is kept)."""
        first = chunk * self.chunk_events
        slots = range(first + 1, first + self.chunk_events + 1)
        entries = await bounded(self.get_entry(app, deployment_id, slot) for slot in slots)
        if any(entry is None for entry in entries):
            return  # not all taken (or expiring): readers go on reading single entries
        key = self._chunk_key(app, deployment_id, chunk)
        # Compacted by another instance meanwhile: the same entries.
        with contextlib.suppress(WriteConflict):
            await self._objects.put_json(key, {"entries": entries}, if_absent=True)
