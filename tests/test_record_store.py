"""Deployment records and events in a real (moto) bucket, through two independent "instances"."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import StorageConfig
from gateway.errors import DeploymentNotFound, EventConflict, WriteConflict
from gateway.server.adapters.deployments.event_log import EventLogStore
from gateway.server.adapters.deployments.records import RecordStore
from gateway.server.adapters.json_objects import S3JsonObjects
from gateway.server.adapters.outbound import Connections
from gateway.server.domain.deployments.event_log import CHUNK_EVENTS, LoggedEvent
from gateway.server.domain.deployments.records import Event, Page, new_record
from gateway.server.domain.deployments.tracker import DeploymentTracker
from gateway.server.domain.storage import KeyPage

from .helpers import MOTO_CREDENTIALS

APP = "my-app"
NOW = "2026-01-01T00:00:00Z"


class CountingObjects(S3JsonObjects):
    """Counts listings, to check what a follower costs the bucket."""

    listings = 0

    async def list_keys(
        self, prefix: str, start_after: str | None = None, max_keys: int = 1000
    ) -> KeyPage:
        self.listings += 1
        return await super().list_keys(prefix, start_after, max_keys)


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


def tracker(client: Connections, bucket: str, max_output: int = 1000) -> DeploymentTracker:
    objects = CountingObjects(client, bucket)
    return DeploymentTracker(
        RecordStore(objects, "deployments/"),
        EventLogStore(objects, "deployments/", CHUNK_EVENTS),
        max_output,
    )


@pytest.fixture
def trackers(clients: list[Connections], bucket: str) -> list[DeploymentTracker]:
    return [tracker(client, bucket) for client in clients]


async def deployment(
    t: DeploymentTracker, deployment_id: str = "d-1", created: float = 1.0
) -> None:
    record = new_record(deployment_id, APP, NOW, None, "https://x.example/a.tgz", None, "ci")
    await t.create(record, created)


def log(number: int, text: str) -> Event:
    return Event(number, "log", content=text)


def status(number: int, value: str) -> Event:
    return Event(number, "status", status=value)


async def test_record_round_trip_and_not_found(trackers: list[DeploymentTracker]) -> None:
    one, two = trackers
    await deployment(one)
    record = await two.get(APP, "d-1")
    assert record["deployment"]["status"] == "queued"
    with pytest.raises(DeploymentNotFound) as caught:
        await two.get(APP, "d-2")
    assert caught.value.body() == {"resource": "deployment", "error": "not found"}
    with pytest.raises(DeploymentNotFound):
        await one.add_event(APP, "d-2", log(1, "x"), NOW)


async def test_retry_is_stored_once_and_a_different_event_conflicts(
    trackers: list[DeploymentTracker], s3: Any, bucket: str
) -> None:
    one, two = trackers
    await deployment(one)
    assert await one.add_event(APP, "d-1", log(1, "hello"), NOW) is True
    assert await two.add_event(APP, "d-1", log(1, "hello"), NOW) is False
    with pytest.raises(EventConflict):
        await two.add_event(APP, "d-1", log(1, "other"), NOW)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert [key for key in keys if "/log/" in key] == ["deployments/my-app/d-1/log/0000000001.json"]
    assert await one.output(APP, "d-1") == "hello\n"
    head = await two.head(APP, "d-1", await two.get(APP, "d-1"))
    assert head is not None and head["state"]["kept_bytes"] == 5


async def test_events_alternating_between_instances_all_count(
    trackers: list[DeploymentTracker],
) -> None:
    one, two = trackers
    await deployment(one)
    for n in range(1, 11):
        await (one if n % 2 else two).add_event(APP, "d-1", log(n, "ab"), NOW)
    head = await one.head(APP, "d-1", await one.get(APP, "d-1"))
    assert head is not None and head["slot"] == 10
    assert head["state"]["kept_bytes"] == 20 and head["state"]["max_id"] == 10


async def test_a_record_replaced_meanwhile_is_read_again_not_overwritten(
    clients: list[Connections], bucket: str
) -> None:
    objects = S3JsonObjects(clients[0], bucket)
    etag = await objects.put_json("k.json", {"n": 1})
    await objects.put_json("k.json", {"n": 2}, if_match=etag)
    with pytest.raises(WriteConflict):
        await objects.put_json("k.json", {"n": 3}, if_match=etag)  # stale: another wrote
    with pytest.raises(WriteConflict):
        await objects.put_json("k.json", {"n": 4}, if_absent=True)
    assert (await objects.get_json("k.json"))[0] == {"n": 2}


async def test_nothing_after_a_final_status_but_its_retry(
    trackers: list[DeploymentTracker],
) -> None:
    one, two = trackers
    await deployment(one)
    await one.add_event(APP, "d-1", status(1, "building"), NOW)
    await one.add_event(APP, "d-1", status(2, "success"), "2026-01-01T00:01:00Z")
    assert await two.add_event(APP, "d-1", status(2, "success"), NOW) is False
    with pytest.raises(EventConflict):
        await two.add_event(APP, "d-1", status(3, "building"), NOW)
    with pytest.raises(EventConflict):
        await two.add_event(APP, "d-1", status(2, "build-error"), NOW)
    record = await two.get(APP, "d-1")
    assert record["deployment"]["status"] == "success"
    assert record["deployment"]["finished_at"] == "2026-01-01T00:01:00Z"


async def test_a_follower_on_one_instance_sees_events_posted_to_the_other(
    trackers: list[DeploymentTracker],
) -> None:
    one, two = trackers
    await deployment(one)
    await one.add_event(APP, "d-1", status(1, "building"), NOW)
    record = await two.get(APP, "d-1")
    seen: list[LoggedEvent] = []
    stopping = asyncio.Event()

    async def follow() -> None:
        async for batch in two.follow(record, 0, 0.05, stopping):
            seen.extend(batch)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    await one.add_event(APP, "d-1", log(2, "step"), NOW)
    await one.add_event(APP, "d-1", status(3, "success"), NOW)
    await asyncio.wait_for(follower, 5)
    assert [(e.shown["id"], e.shown.get("status") or e.shown.get("content")) for e in seen] == [
        (1, "building"),
        (2, "step\n"),
        (3, "success"),
    ]


async def test_follow_resumes_after_last_event_id_and_ends_at_once_when_done(
    trackers: list[DeploymentTracker],
) -> None:
    one, _ = trackers
    await deployment(one)
    for n, event in enumerate([status(1, "building"), log(2, "a"), status(3, "success")], 1):
        assert event.id == n
        await one.add_event(APP, "d-1", event, NOW)
    record = await one.get(APP, "d-1")
    batches = [b async for b in one.follow(record, 1, 0.05, asyncio.Event())]
    assert [(e.slot, e.shown["id"]) for b in batches for e in b] == [(2, 2), (3, 3)]
    assert [b async for b in one.follow(record, 3, 0.05, asyncio.Event())] == []


async def test_follow_resumed_past_every_event_ends_with_the_deployment(
    trackers: list[DeploymentTracker],
) -> None:
    """A Last-Event-ID above every number stored: the final status is behind the follower, so
    no listing shows it; the stream still ends when the deployment does."""
    one, two = trackers
    await deployment(one)
    await one.add_event(APP, "d-1", status(1, "building"), NOW)
    record = await two.get(APP, "d-1")
    batches: list[list[LoggedEvent]] = []

    async def follow() -> None:
        async for batch in two.follow(record, 500, 0.05, asyncio.Event()):
            batches.append(batch)

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    assert not follower.done()
    await one.add_event(APP, "d-1", status(2, "success"), NOW)
    await asyncio.wait_for(follower, 5)
    assert [e for b in batches for e in b] == []


async def test_a_follower_costs_one_listing_per_poll_and_stops_on_request(
    clients: list[Connections], bucket: str
) -> None:
    one = tracker(clients[0], bucket)
    await deployment(one)
    objects = one.store._objects
    assert isinstance(objects, CountingObjects)
    record = await one.get(APP, "d-1")
    stopping = asyncio.Event()
    third = asyncio.Event()
    before = objects.listings
    loop = asyncio.get_running_loop()
    polls: list[float] = []  # when each look's batch came

    async def follow() -> None:
        async for _ in one.follow(record, 0, 0.1, stopping):
            polls.append(loop.time())
            if len(polls) == 3:
                third.set()

    follower = asyncio.create_task(follow())
    # Counted, not timed: how many looks fit in a given time depends on the machine's load.
    await asyncio.wait_for(third.wait(), 30)
    stopping.set()
    await asyncio.wait_for(follower, 10)
    assert objects.listings - before == len(polls) >= 3
    # At most one look per poll interval, however fast the listings answer.
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    assert min(gaps) >= 0.1 - 0.005, gaps


async def test_pages_are_newest_first(trackers: list[DeploymentTracker]) -> None:
    one, two = trackers
    for n in range(5):
        await deployment(one if n % 2 else two, f"d-{n}", created=1000.0 + n)
    records, total = await two.page(APP, Page(1, 2))
    assert total == 5
    assert [r["deployment"]["id"] for r in records] == ["d-4", "d-3"]
    records, _ = await one.page(APP, Page(3, 2))
    assert [r["deployment"]["id"] for r in records] == ["d-0"]
    assert await one.page("other-app", Page(1, 30)) == ([], 0)


async def test_output_is_capped_across_events(clients: list[Connections], bucket: str) -> None:
    small = tracker(clients[0], bucket, max_output=8)
    await deployment(small)
    for n, text in enumerate(["12345", "67890", "abc"], start=1):
        await small.add_event(APP, "d-1", log(n, text), NOW)
    output = await small.output(APP, "d-1")
    assert output.startswith("12345\n678\n[output cut")
    assert output.count("\n") == 3
    # A retry of an event whose content was cut is still recognised as the same event.
    assert await small.add_event(APP, "d-1", log(2, "67890"), NOW) is False


async def test_abort_says_why(trackers: list[DeploymentTracker]) -> None:
    one, _ = trackers
    await deployment(one)
    await one.abort(APP, "d-1", "the deployer could not be reached", NOW)
    record = await one.get(APP, "d-1")
    assert record["deployment"]["status"] == "aborted"
    assert record["deployment"]["finished_at"] == NOW
    assert await one.output(APP, "d-1") == "the deployer could not be reached\n"


async def test_abort_is_skipped_once_the_deployer_has_reported(
    trackers: list[DeploymentTracker],
) -> None:
    one, two = trackers
    await deployment(one)
    await two.add_event(APP, "d-1", status(7, "building"), NOW)
    await one.abort(APP, "d-1", "the deployer could not be reached", NOW)
    record = await one.get(APP, "d-1")
    assert record["deployment"]["status"] == "building"
    assert await one.output(APP, "d-1") == ""
