"""Following deployments: the record and event-log rules applied to what is in the bucket.

The one object handlers (and the local stand-in deployer's reports) go through to record a
deployment, take a deployer's event, read the output, list, and follow the events as they come.

Taking an event, on any instance, with others at once:
1. claim its number (``ids/{n}``, If-None-Match): a different event with that number is a
   conflict; the same one (a retry) goes on to find whether it is in the log already;
2. append it: write the slot after the last one known (If-None-Match), computed from that
   slot's state; when another writer took the slot, read what came meanwhile and try the next.
   Every entry of an event lies after the slot its claim names, so a writer that walks the log
   from there sees it, and an event is in the log once, whoever (first try or retry) wrote it;
3. note the slot in the claim, bring the record's status forward, compact a full chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from gateway.errors import DeploymentNotFound, EventConflict, GatewayError, StorageUnavailable
from gateway.server.adapters.deployments.event_log import EventLogStore
from gateway.server.adapters.deployments.records import RecordStore
from gateway.server.domain.deployments.event_log import (
    Entry,
    LoggedEvent,
    entry_slot,
    entry_state,
    next_entry,
    public_event,
    render_output,
    snapshot,
)
from gateway.server.domain.deployments.log_heads import KeyedLocks, LogHeads
from gateway.server.domain.deployments.records import Event, Page, Record, is_finished

log = logging.getLogger(__name__)

# Seconds an event may spend losing its slot to other writers before it gives up with 503
# (nothing stored): each loss is another event stored, one every few milliseconds, so a deployer
# would need thousands of requests in flight to make an event wait this long.
APPEND_SECONDS = 20.0


class DeploymentTracker:
    """Records deployments and what their deployer reports; every instance sees the same."""

    def __init__(self, store: RecordStore, events: EventLogStore, max_output_bytes: int) -> None:
        self.store = store
        self.events = events
        self.max_output_bytes = max_output_bytes
        self._heads = LogHeads()
        self._turns = KeyedLocks()

    async def create(self, record: Mapping[str, Any], created: float) -> None:
        deployment = record["deployment"]
        await self.store.create(deployment["app_id"], deployment["id"], record, created)

    async def get(self, app: str, deployment_id: str) -> Record:
        """The record, or ``DeploymentNotFound`` (404 in the platform's shape)."""
        record, _ = await self.store.read(app, deployment_id)
        return record

    async def page(self, app: str, page: Page) -> tuple[list[Record], int]:
        return await self.store.page(app, page.start, page.stop)

    # Taking events ---------------------------------------------------------------------------

    async def head(self, app: str, deployment_id: str, record: Mapping[str, Any]) -> Entry | None:
        """The last entry of the log (None: empty), read after what this instance knows of it."""
        known = self._heads.get((app, deployment_id))
        after = max(entry_slot(known), int(record.get("log_slot", 0)))
        last = await self.events.head_slot(app, deployment_id, after)
        entry = known if entry_slot(known) == last else None
        if entry is None and last:
            entry = await self.events.get_entry(app, deployment_id, last)
        self._heads.remember((app, deployment_id), [entry])
        return entry

    async def add_event(self, app: str, deployment_id: str, event: Event, received_at: str) -> bool:
        """Store ``event`` once. True if it was new, False for a retry of an event stored before.
        ``EventConflict`` for a different event with a used number, or a new event once the
        deployment has finished; ``TooManyEvents``; ``DeploymentNotFound``."""
        record, _ = await self.store.read(app, deployment_id)
        digest = event.digest()
        if is_finished(record):
            # Only a retry can still succeed: no claim is made for anything else.
            claim = await self.events.get_claim(app, deployment_id, event.id)
            if claim is None:
                raise EventConflict("the deployment has finished; no more events")
        else:
            start = self._heads.get((app, deployment_id)) or await self.head(
                app, deployment_id, record
            )
            mine = {"digest": digest, "from": entry_slot(start)}
            claim = await self.events.claim(app, deployment_id, event.id, mine)
            if claim is None:
                entry, fresh = await self._append(app, deployment_id, event, start, received_at)
                await self._settle(app, deployment_id, mine, entry)
                return fresh
        if claim.get("digest") != digest:
            raise EventConflict(f"event {event.id} was already received with other content")
        if claim.get("slot") is not None:
            return False
        # Claimed before, maybe not stored (an instance stopped, or it is storing it right now).
        start = await self._entry(app, deployment_id, int(claim["from"]))
        entry, fresh = await self._append(
            app, deployment_id, event, start, received_at, walk_first=True
        )
        await self._settle(app, deployment_id, claim, entry)
        return fresh

    async def _entry(self, app: str, deployment_id: str, slot: int) -> Entry | None:
        return await self.events.get_entry(app, deployment_id, slot) if slot else None

    async def _append(
        self,
        app: str,
        deployment_id: str,
        event: Event,
        previous: Entry | None,
        received_at: str,
        walk_first: bool = False,
    ) -> tuple[Entry, bool]:
        """Write ``event`` in the first free slot after ``previous``, or find it there.

        Writers on this instance take turns (a lock per deployment): racing one another for
        the same slot would cost a listing and a read per loss, for nothing. Other instances
        still race, and the conditional write settles it."""
        try:
            async with asyncio.timeout(APPEND_SECONDS), self._turns.hold((app, deployment_id)):
                key = (app, deployment_id)
                between = self._heads.numbers_after(key, entry_slot(previous))
                if not walk_first and between and event.id not in between:
                    # Written meanwhile, seen by this instance: start after them.
                    previous = self._heads.get(key)
                return await self._take_slot(
                    app, deployment_id, event, previous, received_at, walk_first
                )
        except TimeoutError:
            log.warning(
                "deployment %s: event %d found no free slot in time", deployment_id, event.id
            )
            raise StorageUnavailable(
                "too many events at once for this deployment, try again"
            ) from None

    async def _take_slot(
        self,
        app: str,
        deployment_id: str,
        event: Event,
        previous: Entry | None,
        received_at: str,
        walk_first: bool,
    ) -> tuple[Entry, bool]:
        while True:
            if walk_first:
                newer = await self.events.entries_after(app, deployment_id, entry_slot(previous))
                for entry in newer:
                    if int(entry["event"]["id"]) == event.id:
                        return entry, False  # stored by an earlier try (same claim, same event)
                previous = newer[-1] if newer else previous
                self._heads.remember((app, deployment_id), newer)
            walk_first = True
            entry = next_entry(previous, event, received_at, self.max_output_bytes)
            if await self.events.put_entry(app, deployment_id, entry):
                self._heads.remember((app, deployment_id), [entry])
                return entry, True

    async def _settle(
        self, app: str, deployment_id: str, claim: Mapping[str, Any], entry: Entry
    ) -> None:
        """After an event is in the log: its claim, the record, the chunk it completed."""
        slot = entry_slot(entry)
        if entry["event"]["type"] == "status":
            # Before the claim: when this fails (503), the retry walks the log and comes here.
            record, etag = await self.store.read(app, deployment_id)
            await self.store.update(
                app, deployment_id, lambda current: snapshot(current, entry), record, etag
            )
        with contextlib.suppress(GatewayError):  # a retry walks the log instead
            settled = {**claim, "slot": slot}
            await self.events.settle_claim(app, deployment_id, int(entry["event"]["id"]), settled)
        if slot % self.events.chunk_events == 0:
            try:
                await self.events.compact(app, deployment_id, slot // self.events.chunk_events - 1)
            except GatewayError as exc:  # readers read single entries meanwhile
                log.warning("deployment %s: chunk not compacted: %s", deployment_id, exc)

    async def abort(self, app: str, deployment_id: str, reason: str, received_at: str) -> None:
        """Finish a deployment the deployer never received: a log line with ``reason``, then
        ``aborted``. Skipped when the deployer has reported meanwhile (it did get the job)."""
        record = await self.get(app, deployment_id)
        try:
            if await self.head(app, deployment_id, record) is not None:
                raise EventConflict("the deployer has reported")
            await self.add_event(app, deployment_id, Event(1, "log", content=reason), received_at)
            await self.add_event(
                app, deployment_id, Event(2, "status", status="aborted"), received_at
            )
        except EventConflict:
            log.info("deployment %s: the deployer reported meanwhile, not aborted", deployment_id)

    # Reading ---------------------------------------------------------------------------------

    async def output(self, app: str, deployment_id: str) -> str:
        """The output so far: every log event's kept lines in number order, the cut notice last."""
        entries = await self.events.entries_after(app, deployment_id, 0)
        return render_output(entries, self.max_output_bytes)

    async def follow(
        self,
        record: Mapping[str, Any],
        after: int,
        poll_interval: float,
        stopping: asyncio.Event,
    ) -> AsyncGenerator[list[LoggedEvent], None]:
        """The events of ``record``'s deployment in log slots above ``after``, as they are
        stored, one batch per look at the bucket (often empty); ONE listing per look, at most
        one per ``poll_interval``. Ends after a final status, or when ``stopping`` is set.
        Knows no transport: the SSE handler renders it (and a WebSocket could)."""
        deployment = record["deployment"]
        app, deployment_id = deployment["app_id"], deployment["id"]
        if is_finished(record) and after >= int(record.get("log_slot", 0)):
            return  # the final status is behind the follower: nothing more will come
        # Resumed past every slot the record knows of (a Last-Event-ID from elsewhere): the
        # final status may lie behind the follower, where no listing shows it.
        beyond = after > int(record.get("log_slot", 0))
        while not stopping.is_set():
            entries = await self.events.entries_after(app, deployment_id, after)
            shown = [public_event(entry, self.max_output_bytes) for entry in entries]
            yield [event for event in shown if event is not None]
            if any(entry_state(entry)["finished_at"] for entry in entries):
                return
            after = entry_slot(entries[-1]) if entries else after
            beyond = beyond and not entries
            if beyond and await self._finished_before(app, deployment_id, after):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=poll_interval)

    async def _finished_before(self, app: str, deployment_id: str, after: int) -> bool:
        """True if the deployment has finished at a slot ``after`` or lower (or its record is
        gone): a follower resumed after ``after`` will see nothing more."""
        try:
            record = await self.get(app, deployment_id)
        except DeploymentNotFound:
            return True
        return is_finished(record) and after >= int(record.get("log_slot", 0))
