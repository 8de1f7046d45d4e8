"""Following deployments: the record rules applied to the records in the bucket.

The one object handlers (and the local stand-in deployer's reports) go through to record a
deployment, take a deployer's event, read the output, list, and follow the events as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from gateway.server.adapters.records import DeploymentNotFound, Record, RecordStore
from gateway.server.domain.records import (
    Event,
    EventConflict,
    Page,
    apply_event,
    event_output,
    is_finished,
    is_terminal,
    public_event,
    same_event,
    stored_event,
)

log = logging.getLogger(__name__)


class DeploymentTracker:
    """Records deployments and what their deployer reports; every instance sees the same."""

    def __init__(self, store: RecordStore, max_output_bytes: int) -> None:
        self.store = store
        self.max_output_bytes = max_output_bytes

    async def create(self, record: Mapping[str, Any], created: float) -> None:
        deployment = record["deployment"]
        await self.store.create(deployment["app_id"], deployment["id"], record, created)

    async def get(self, app: str, deployment_id: str) -> Record:
        """The record, or ``DeploymentNotFound`` (404 in the platform's shape)."""
        record, _ = await self.store.read(app, deployment_id)
        return record

    async def page(self, app: str, page: Page) -> tuple[list[Record], int]:
        return await self.store.page(app, page.start, page.stop)

    async def add_event(self, app: str, deployment_id: str, event: Event, received_at: str) -> bool:
        """Store ``event`` once and bring the record up to date. True if it was new, False for a
        retry of an event stored before. ``EventConflict`` for a different event with a used
        number, or any new event once the deployment has finished; ``DeploymentNotFound``."""
        record, etag = await self.store.read(app, deployment_id)
        if is_finished(record):
            await self._judge_retry(app, deployment_id, event, finished=True)
            return False
        stored = stored_event(event, record, self.max_output_bytes, received_at)
        fresh = await self.store.put_event(app, deployment_id, event.id, stored)
        if not fresh:
            stored = await self._judge_retry(app, deployment_id, event, finished=False)
        await self.store.update(
            app, deployment_id, lambda current: apply_event(current, stored, fresh), record, etag
        )
        return fresh

    async def _judge_retry(
        self, app: str, deployment_id: str, event: Event, finished: bool
    ) -> Record:
        existing = await self.store.get_event(app, deployment_id, event.id)
        if existing is None:
            if finished:
                raise EventConflict("the deployment has finished; no more events")
            # Taken a moment ago, gone now: only the lifecycle rule removes events.
            raise DeploymentNotFound()
        if not same_event(existing, event):
            raise EventConflict(f"event {event.id} was already received with other content")
        return existing

    async def output(self, app: str, deployment_id: str) -> str:
        """The output so far: every log event's lines in number order (the cut notice last)."""
        events = await self.store.all_events(app, deployment_id)
        return "".join(event_output(event, self.max_output_bytes) for event in events)

    async def abort(self, app: str, deployment_id: str, reason: str, received_at: str) -> None:
        """Finish a deployment the deployer never received: a log line with ``reason``, then
        ``aborted``. Skipped when the deployer has reported meanwhile (it did get the job)."""
        record = await self.get(app, deployment_id)
        number = int(record["last_event"]) + 1
        try:
            await self.add_event(
                app, deployment_id, Event(number, "log", content=reason), received_at
            )
            await self.add_event(
                app, deployment_id, Event(number + 1, "status", status="aborted"), received_at
            )
        except EventConflict:
            log.info("deployment %s: the deployer reported meanwhile, not aborted", deployment_id)

    async def follow(
        self,
        record: Mapping[str, Any],
        after: int,
        poll_interval: float,
        stopping: asyncio.Event,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The events of ``record``'s deployment numbered above ``after``, as they are stored,
        one batch per look at the bucket (often empty); ONE listing per ``poll_interval``.
        Ends after a final status, or when ``stopping`` is set."""
        deployment = record["deployment"]
        app, deployment_id = deployment["app_id"], deployment["id"]
        if is_finished(record) and after >= int(record["status_event"]):
            return  # the final status is behind the follower: nothing more will come
        after_key = self.store.event_key(app, deployment_id, after) if after else None
        # Resumed past every event the record knows of (a Last-Event-ID from elsewhere): the
        # final status may lie behind the follower, where no listing shows it.
        beyond = after > int(record["last_event"])
        while not stopping.is_set():
            events, after_key = await self.store.events_after(app, deployment_id, after_key)
            shown = [public_event(event, self.max_output_bytes) for event in events]
            yield [event for event in shown if event is not None]
            if any(e["type"] == "status" and is_terminal(str(e["status"])) for e in events):
                return
            beyond = beyond and not events
            if beyond and await self._finished_before(app, deployment_id, after):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=poll_interval)

    async def _finished_before(self, app: str, deployment_id: str, after: int) -> bool:
        """True if the deployment has finished with a status numbered ``after`` or lower (or
        its record is gone): a follower resumed after ``after`` will see nothing more."""
        try:
            record = await self.get(app, deployment_id)
        except DeploymentNotFound:
            return True
        return is_finished(record) and after >= int(record["status_event"])
