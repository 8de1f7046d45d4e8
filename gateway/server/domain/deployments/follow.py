"""One follow core per instance, transport-free: followers of one deployment, or of one app, share
one look at the bucket per ``deployments.poll_interval``, whatever their number and whether they
came by server-sent events or by the WebSocket stream. Each transport renders the same sequence.

- ``DeploymentFeed``: the events of one deployment, as ``tracker.follow`` finds them, kept in
  order for every follower of it (one ``follow`` loop, so one listing per look, for all).
- ``AppFeed``: the app's recent deployments (a ``new`` item each, from one listing of the app's
  index per look) and, through their ``DeploymentFeed``s, their events: one log of items for all
  the WebSocket followers of the app, each reading it from its own position.
- ``FollowHub``: hands out the feeds, and drops one when its last follower leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.errors import DeploymentNotFound, GatewayError
from gateway.server.domain.deployments.event_log import LoggedEvent
from gateway.server.domain.deployments.records import Record
from gateway.server.domain.deployments.tracker import DeploymentTracker

log = logging.getLogger(__name__)

# A new follower of an app sees at most this many of its deployments again (the newest).
REPLAY_MAX = 20
# An event as followers are sent it: its slot in the deployment's log and its public JSON.
Shown = LoggedEvent


def event_number(event: Shown) -> int:
    """Where an event stands in its deployment's sequence (what Last-Event-ID resumes after)."""
    return event.slot


class Changes:
    """Wakes every waiter when something was added: a fresh ``asyncio.Event`` per change."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self) -> None:
        await self._event.wait()


class DeploymentFeed:
    """The events of one deployment, in the order ``tracker.follow`` yields them. ``failed``: the
    bucket failed the look; followers decide (SSE ends, the app feed tries again)."""

    def __init__(self, batches: Callable[[], AsyncIterator[list[Shown]]]) -> None:
        self.events: list[Shown] = []
        self.finished = False
        self.failed: Exception | None = None
        self.followers = 0
        self._changes = Changes()
        self._task = asyncio.create_task(self._run(batches))

    async def _run(self, batches: Callable[[], AsyncIterator[list[Shown]]]) -> None:
        try:
            looks = batches()
            async with contextlib.aclosing(looks):  # type: ignore[type-var]
                async for batch in looks:
                    if batch:
                        self.events.extend(batch)
                        self._changes.notify()
        except Exception as exc:
            self.failed = exc
        finally:
            self.finished = True
            self._changes.notify()

    async def read(self, position: int, within: float | None = None) -> list[Shown]:
        """The events from ``position`` on, waiting for some while there are none (at most
        ``within`` seconds); an empty list once the feed has ended (``finished``) and
        ``position`` is past its last event, or when the wait timed out."""
        if position >= len(self.events) and not self.finished:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    while position >= len(self.events) and not self.finished:
                        await self._changes.wait()
        return self.events[position:]

    def close(self) -> None:
        self._task.cancel()


@dataclass(frozen=True)
class Item:
    """One thing an app's follower is told: a ``new`` deployment (its record) or an ``event``
    (its public JSON)."""

    kind: Literal["new", "event"]
    deployment_id: str
    value: Mapping[str, Any]


@dataclass
class Known:
    created: float
    record: Record | None = None


@dataclass
class AppFeed:
    """The items of one app, looked for once per interval for all its followers."""

    hub: FollowHub
    app: str
    items: list[Item] = field(default_factory=list)
    known: dict[str, Known] = field(default_factory=dict)
    followers: int = 0
    changes: Changes = field(default_factory=Changes)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self) -> None:
        self._spawn(self._look_for_deployments())

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()

    def _add(self, item: Item) -> None:
        self.items.append(item)
        self.changes.notify()

    async def _look_for_deployments(self) -> None:
        hub = self.hub
        while not hub.stopping.is_set():
            try:
                newest = await hub.tracker.store.newest(self.app, REPLAY_MAX)
                await self._take(newest)
            except GatewayError as exc:
                log.warning("deployments of %s not looked at: %s", self.app, exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hub.stopping.wait(), timeout=hub.poll_interval)
        self.changes.notify()  # followers waiting for news learn of the shutdown at once

    async def _take(self, newest: list[tuple[str, float]]) -> None:
        """Announce the deployments not seen yet, oldest first, and follow their events."""
        for deployment_id, created in reversed(newest):
            if deployment_id in self.known:
                continue
            if created < self.hub.clock() - self.hub.replay_seconds:
                self.known[deployment_id] = Known(created)  # too old to be told about
                continue
            try:
                record = await self.hub.tracker.get(self.app, deployment_id)
            except DeploymentNotFound:
                continue  # listed, then expired
            self.known[deployment_id] = Known(created, record)
            self._add(Item("new", deployment_id, record))
            self._spawn(self._relay(record))

    async def _relay(self, record: Record) -> None:
        """The deployment's events into the app's items, until its final status; a failed look
        is tried again after an interval, from where it stopped."""
        deployment_id = record["deployment"]["id"]
        hub, position = self.hub, 0
        while not hub.stopping.is_set():
            async with hub.deployment(record) as feed:
                while events := await feed.read(position):
                    position += len(events)
                    for event in events:
                        self._add(Item("event", deployment_id, event.shown))
                if feed.failed is None:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hub.stopping.wait(), timeout=hub.poll_interval)

    def replayed(self) -> set[str]:
        """The deployments a follower joining now is told about again: created in the last
        ``replay_seconds``, the ``REPLAY_MAX`` newest."""
        since = self.hub.clock() - self.hub.replay_seconds
        recent = sorted(
            (k.created, d) for d, k in self.known.items() if k.record and k.created >= since
        )
        return {d for _, d in recent[-REPLAY_MAX:]}


class AppFollower:
    """One follower's position in an app's items: the replayed deployments' items from the start,
    then everything about deployments announced after it joined."""

    def __init__(self, feed: AppFeed, wanted: set[str]) -> None:
        self._feed = feed
        self._joined = len(feed.items)
        self._position = 0
        self._wanted = wanted

    async def next_items(self, within: float) -> list[Item]:
        """Items not seen yet; waits up to ``within`` seconds for some (then an empty list)."""
        feed = self._feed
        if self._position >= len(feed.items):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.changes.wait(), within)
        items = feed.items[self._position :]
        start = self._position
        self._position = len(feed.items)
        shown = []
        for index, item in enumerate(items, start):
            if item.kind == "new" and index >= self._joined:
                self._wanted.add(item.deployment_id)
            if item.deployment_id in self._wanted:
                shown.append(item)
        return shown


class FollowHub:
    """The feeds of one instance; each lives while it has followers."""

    def __init__(
        self,
        tracker: DeploymentTracker,
        poll_interval: float,
        replay_seconds: float,
        stopping: asyncio.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tracker = tracker
        self.poll_interval = poll_interval
        self.replay_seconds = replay_seconds
        self.stopping = stopping
        self.clock = clock
        self._deployments: dict[tuple[str, str], DeploymentFeed] = {}
        self._apps: dict[str, AppFeed] = {}

    @contextlib.asynccontextmanager
    async def deployment(self, record: Mapping[str, Any]) -> AsyncIterator[DeploymentFeed]:
        """The shared feed of ``record``'s deployment, from its first event."""
        key = (record["deployment"]["app_id"], record["deployment"]["id"])
        feed = self._deployments.get(key)
        if feed is None or feed.failed is not None:
            feed = DeploymentFeed(
                lambda: self.tracker.follow(record, 0, self.poll_interval, self.stopping)
            )
            self._deployments[key] = feed
        feed.followers += 1
        try:
            yield feed
        finally:
            feed.followers -= 1
            if feed.followers == 0:
                feed.close()
                if self._deployments.get(key) is feed:
                    del self._deployments[key]

    async def follow(
        self, record: Mapping[str, Any], after: int
    ) -> AsyncGenerator[list[Shown], None]:
        """``tracker.follow``'s contract, from the shared feed: the events numbered above
        ``after`` in batches, an empty batch when a look found nothing (at most one per
        ``poll_interval``), until the final status or ``stopping``; the look's error if it
        failed."""
        async with self.deployment(record) as feed:
            position = 0
            while True:
                events = await feed.read(position, within=self.poll_interval)
                position += len(events)
                yield [event for event in events if event_number(event) > after]
                if feed.finished and position >= len(feed.events):
                    if feed.failed is not None:
                        raise feed.failed
                    return

    @contextlib.asynccontextmanager
    async def app(self, app: str) -> AsyncIterator[AppFollower]:
        """A follower of every deployment of ``app``, recent ones replayed."""
        feed = self._apps.get(app)
        if feed is None:
            feed = self._apps[app] = AppFeed(self, app)
            feed.start()
        feed.followers += 1
        try:
            yield AppFollower(feed, feed.replayed())
        finally:
            feed.followers -= 1
            if feed.followers == 0:
                feed.close()
                if self._apps.get(app) is feed:
                    del self._apps[app]
