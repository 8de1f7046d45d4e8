"""How the uploader cuts a body into parts, whatever chunks it arrives in (an in-memory store).

S3 refuses a multipart object whose parts, but the last, are not all at least the minimum size;
the uploader makes every part but the last exactly ``part_size`` and never sends an empty one.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.server.domain.storage import Buffer
from gateway.server.domain.uploads import BufferBudget, Uploader

from .memory_store import MemoryStore

PART = 1000


def cut(data: bytes, sizes: Iterator[int]) -> list[bytes]:
    chunks, at = [], 0
    while at < len(data):
        size = next(sizes)
        chunks.append(data[at : at + size])
        at += size
    return chunks


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def repeat(*sizes: int) -> Iterator[int]:
    while True:
        yield from sizes


@pytest.mark.parametrize(
    ("size", "chunks"),
    [
        (0, repeat(1)),
        (PART - 1, repeat(7)),
        (PART, repeat(PART)),
        (PART + 1, repeat(1)),
        (2 * PART, repeat(PART // 2)),
        (3 * PART + 500, repeat(3 * PART + 500)),  # one chunk bigger than three parts
        (4 * PART + 3, repeat(999, 1, 1001, 2)),
        (5 * PART, repeat(1700, 0, 300)),
    ],
)
async def test_parts_are_exact_and_never_empty(size: int, chunks: Iterator[int]) -> None:
    store = MemoryStore()
    budget = BufferBudget(2 * PART)
    uploader = Uploader(store, part_size=PART, max_size=10 * PART, budget=budget)
    data = os.urandom(size)

    result = await uploader.upload(
        "key", stream(cut(data, chunks)), length=None, content_type="application/gzip"
    )

    assert store.objects["key"].data == data
    assert result.size == size
    writes = [c for c in store.calls if c != "sha256"]  # then the checksum is recorded
    if size < PART:
        assert writes == ["put"]
        return
    numbers = [c for c in writes if c.startswith("part")]
    assert numbers == [f"part {n}" for n in range(1, -(-size // PART) + 1)]
    assert writes[0] == "create" and writes[-1] == "complete"
    assert budget.peak <= budget.limit and budget.in_use == 0


async def test_one_part_sends_while_the_next_fills() -> None:
    store = MemoryStore()
    budget = BufferBudget(2 * PART)
    uploader = Uploader(store, part_size=PART, max_size=10 * PART, budget=budget)
    data = os.urandom(6 * PART)

    async def slow() -> AsyncIterator[bytes]:
        for chunk in cut(data, repeat(250)):
            await asyncio.sleep(0.0005)
            yield chunk

    await uploader.upload("key", slow(), length=None, content_type="application/gzip")

    assert store.objects["key"].data == data
    assert store.max_concurrent_parts == 1  # never two parts uploading at once
    assert budget.peak == 2 * PART  # one part sending, one filling


async def test_a_sent_part_is_not_kept_while_the_upload_waits_for_its_client() -> None:
    # The budget counts a part until S3 has it; memory must follow: an upload waiting for the
    # rest of its body keeps no reference to a part already sent.
    sent: list[Buffer] = []

    class Recording(MemoryStore):
        async def upload_part(self, key: str, upload_id: str, number: int, data: Buffer) -> str:
            sent.append(data)
            return await super().upload_part(key, upload_id, number, data)

    store = Recording()
    uploader = Uploader(store, part_size=PART, max_size=10 * PART, budget=BufferBudget(2 * PART))
    data = os.urandom(3 * PART)
    stalled, resume = asyncio.Event(), asyncio.Event()

    async def pausing() -> AsyncIterator[bytes]:
        yield data[: PART + PART // 2]
        stalled.set()
        await resume.wait()
        yield data[PART + PART // 2 :]

    upload = asyncio.ensure_future(
        uploader.upload("key", pausing(), length=None, content_type="application/gzip")
    )
    await stalled.wait()
    for _ in range(100):  # until the first part is through the store
        if store.parts_uploaded("key"):
            break
        await asyncio.sleep(0.001)
    assert len(sent) == 1
    gc.collect()
    assert gc.get_referrers(sent[0]) == [sent]
    resume.set()
    await upload
    assert store.objects["key"].data == data
