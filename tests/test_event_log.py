"""The event log under concurrency: two "instances" (trackers with their own S3 connections) on
one moto bucket, taking a deployer's events in any order, many at once.

The race tests use ``atomic_conditional_writes``: moto checks If-None-Match / If-Match and then
writes in two steps, so without that fixture two writers could both create one key, which S3
never lets happen (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import StorageConfig
from gateway.errors import EventConflict
from gateway.server.adapters.deployments.event_log import EventLogStore
from gateway.server.adapters.deployments.records import RecordStore
from gateway.server.adapters.json_objects import S3JsonObjects
from gateway.server.adapters.outbound import Connections
from gateway.server.domain.deployments.event_log import CHUNK_EVENTS, LoggedEvent, cut_line
from gateway.server.domain.deployments.records import Event, new_record
from gateway.server.domain.deployments.tracker import DeploymentTracker

from .helpers import MOTO_CREDENTIALS

APP = "my-app"
NOW = "2026-01-01T00:00:00Z"
EVENTS = 200
AT_ONCE = 16
LINE = 1000  # characters of text per event, plus its newline: 200 events are 200,200 bytes


@pytest.fixture
async def clients(moto_endpoint: str, bucket: str) -> AsyncIterator[list[Connections]]:
    """Two sets of connections, as two gateway instances would have."""
    storage = StorageConfig(
        bucket=bucket,
        endpoint_url=moto_endpoint,
        access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
        secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
    )
    one, two = Connections(storage), Connections(storage)
    async with one.open(), two.open():
        yield [one, two]


def tracker(client: Connections, bucket: str, max_output: int) -> DeploymentTracker:
    objects = S3JsonObjects(client, bucket)
    return DeploymentTracker(
        RecordStore(objects, "deployments/"),
        EventLogStore(objects, "deployments/", CHUNK_EVENTS),
        max_output,
    )


async def deployment(t: DeploymentTracker) -> None:
    record = new_record("d-1", APP, NOW, None, "https://x.example/a.tgz", None, "ci")
    await t.create(record, 1.0)


def line(number: int) -> str:
    return f"event {number:04d} ".ljust(LINE, "x") + "\n"


def status(number: int, value: str) -> Event:
    return Event(number, "status", status=value)


async def post_all(
    trackers: list[DeploymentTracker], events: list[Event], retries: bool = True
) -> list[bool]:
    """Each event posted once (and, with ``retries``, every fourth again at the same moment on
    the other instance, as a deployer retrying a lost answer would), ``AT_ONCE`` requests in
    flight: whether it was new, per post."""
    semaphore = asyncio.Semaphore(AT_ONCE)

    async def post(t: DeploymentTracker, event: Event) -> bool:
        async with semaphore:
            return await t.add_event(APP, "d-1", event, NOW)

    calls = [post(trackers[n % 2], event) for n, event in enumerate(events)]
    if retries:
        calls += [post(trackers[(n + 1) % 2], event) for n, event in enumerate(events[::4])]
    return list(await asyncio.gather(*calls))


@pytest.mark.usefixtures("atomic_conditional_writes")
async def test_two_instances_count_the_output_exactly_and_cut_it_once(
    clients: list[Connections], bucket: str
) -> None:
    cap = 64 * 1024
    one, two = (tracker(client, bucket, cap) for client in clients)
    await deployment(one)
    events = [Event(n, "log", content=line(n)) for n in range(1, EVENTS + 1)]
    random.Random(7).shuffle(events)

    fresh = await post_all([one, two], events)

    # Every event new exactly once, whichever of its posts stored it.
    firsts, retried = fresh[:EVENTS], fresh[EVENTS:]
    assert sum(firsts) + sum(retried) == EVENTS
    assert all(a != b for a, b in zip(firsts[::4], retried, strict=True))
    assert all(firsts[n] for n in range(EVENTS) if n % 4)
    head = await two.head(APP, "d-1", await two.get(APP, "d-1"))
    assert head is not None and head["slot"] == EVENTS
    assert head["state"]["received_bytes"] == EVENTS * (LINE + 1) == 200_200
    assert head["state"]["kept_bytes"] == cap
    output = await one.output(APP, "d-1")
    assert output.count("[output cut") == 1 and output.endswith(cut_line(cap))
    kept = output.removesuffix(cut_line(cap))
    # What was kept: whole lines and one cut short (its newline added), in the deployer's order.
    assert len(kept.encode()) == cap + 1
    lines = kept.splitlines(keepends=True)
    numbers = [int(text.split()[1]) for text in lines]
    assert numbers == sorted(numbers)
    assert sum(text == line(n) for text, n in zip(lines, numbers, strict=True)) == len(lines) - 1


@pytest.mark.usefixtures("atomic_conditional_writes")
async def test_a_follower_sees_every_event_whatever_its_number(
    clients: list[Connections], bucket: str
) -> None:
    one, two = (tracker(client, bucket, 10 * 1024 * 1024) for client in clients)
    await deployment(one)
    numbers = [n for n in range(1, EVENTS + 1) if n != 150]
    events = [Event(n, "log", content=line(n)) for n in numbers]
    random.Random(11).shuffle(events)
    seen: list[LoggedEvent] = []

    async def follow() -> None:
        record = await two.get(APP, "d-1")
        async for batch in two.follow(record, 0, 0.05, asyncio.Event()):
            seen.extend(batch)

    follower = asyncio.create_task(follow())
    try:
        await post_all([one, two], events, retries=False)
        # The final status last, numbered below some events: it still ends the deployment.
        assert await one.add_event(APP, "d-1", status(150, "success"), NOW) is True
        await asyncio.wait_for(follower, 30)
    finally:
        follower.cancel()

    assert [event.slot for event in seen] == list(range(1, EVENTS + 1))
    shown = [event.shown["id"] for event in seen]
    assert sorted(shown[:-1]) == numbers
    assert shown != sorted(shown)  # lower numbers did arrive after higher ones
    assert seen[-1].final and seen[-1].shown["status"] == "success"
    record = await two.get(APP, "d-1")
    assert record["deployment"]["status"] == "success"
    with pytest.raises(EventConflict):
        await two.add_event(APP, "d-1", status(EVENTS + 1, "pushing"), NOW)


@pytest.mark.usefixtures("atomic_conditional_writes")
async def test_a_final_status_wins_over_any_number_and_ends_the_deployment(
    clients: list[Connections], bucket: str
) -> None:
    one, two = (tracker(client, bucket, 1000) for client in clients)
    await deployment(one)
    assert await one.add_event(APP, "d-1", status(10, "building"), NOW) is True
    assert await two.add_event(APP, "d-1", status(5, "success"), "2026-01-01T00:05:00Z")
    record = await one.get(APP, "d-1")
    assert record["deployment"]["status"] == "success"
    assert record["deployment"]["finished_at"] == "2026-01-01T00:05:00Z"
    for late in (status(12, "pushing"), Event(3, "log", content="late")):
        with pytest.raises(EventConflict):
            await one.add_event(APP, "d-1", late, NOW)
    # The retries of what was stored are still fine, on either instance.
    assert await two.add_event(APP, "d-1", status(10, "building"), NOW) is False
    assert await one.add_event(APP, "d-1", status(5, "success"), NOW) is False


async def test_an_event_claimed_but_never_stored_is_stored_by_its_retry(
    clients: list[Connections], bucket: str
) -> None:
    """An instance stopped between claiming an event's number and writing it to the log: the
    deployer's retry (on another instance) finds the claim, walks the log, and stores it."""
    one, two = (tracker(client, bucket, 1000) for client in clients)
    await deployment(one)
    await one.add_event(APP, "d-1", Event(1, "log", content="first"), NOW)
    orphan = Event(2, "log", content="second")
    claim = {"digest": orphan.digest(), "from": 1}
    assert await one.events.claim(APP, "d-1", 2, claim) is None
    await one.add_event(APP, "d-1", Event(3, "log", content="third"), NOW)

    assert await two.add_event(APP, "d-1", orphan, NOW) is True
    assert await one.add_event(APP, "d-1", orphan, NOW) is False
    with pytest.raises(EventConflict):
        await one.add_event(APP, "d-1", Event(2, "log", content="other"), NOW)
    assert await two.output(APP, "d-1") == "first\nsecond\nthird\n"
    settled = await one.events.get_claim(APP, "d-1", 2)
    assert settled is not None and settled["slot"] == 3


@pytest.mark.usefixtures("atomic_conditional_writes")
async def test_one_event_posted_many_times_at_once_is_stored_once(
    clients: list[Connections], bucket: str, s3: Any
) -> None:
    one, two = (tracker(client, bucket, 1000) for client in clients)
    await deployment(one)
    event = Event(1, "log", content="only once")
    fresh = await asyncio.gather(*(t.add_event(APP, "d-1", event, NOW) for t in [one, two] * 8))
    assert sorted(fresh) == [False] * 15 + [True]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="deployments/my-app/d-1/log/")
    assert [o["Key"] for o in listed["Contents"]] == ["deployments/my-app/d-1/log/0000000001.json"]
