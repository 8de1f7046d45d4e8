"""What one instance remembers of the event logs it writes: their last entry, the numbers of the
events in the slots just before it, and whose turn it is to write.

Only a hint: another instance may have written further since. It lets an event take its slot at
the first try, without listing the log, when this instance wrote or read the slots before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Any

from gateway.server.domain.deployments.event_log import entry_slot

Entry = dict[str, Any]
Key = tuple[str, str]
# Deployments remembered at once (the least recently used is forgotten first).
HEADS_REMEMBERED = 1024
# Slots before the head whose event numbers are remembered: more than a deployer has in flight.
NUMBERS_REMEMBERED = 256


class LogHeads:
    """The last known entry of each deployment's log, and the numbers in the slots before it
    (as far back as this instance saw them without a gap)."""

    def __init__(self) -> None:
        self._heads: OrderedDict[Key, tuple[Entry, dict[int, int]]] = OrderedDict()

    def get(self, key: Key) -> Entry | None:
        known = self._heads.get(key)
        return None if known is None else known[0]

    def remember(self, key: Key, entries: Iterable[Entry | None]) -> None:
        """Take note of ``entries`` (in slot order) read or written just now."""
        head, numbers = self._heads.get(key, (None, {}))
        for entry in entries:
            if entry is None or entry_slot(entry) <= entry_slot(head):
                continue
            if entry_slot(entry) != entry_slot(head) + 1:
                numbers = {}  # a gap: what came between is unknown here
            head = entry
            numbers[entry_slot(entry)] = int(entry["event"]["id"])
        if head is None:
            return
        for slot in [s for s in numbers if s <= entry_slot(head) - NUMBERS_REMEMBERED]:
            del numbers[slot]
        self._heads[key] = (head, numbers)
        self._heads.move_to_end(key)
        while len(self._heads) > HEADS_REMEMBERED:
            self._heads.popitem(last=False)

    def numbers_after(self, key: Key, slot: int) -> list[int] | None:
        """The event numbers in the slots after ``slot`` up to the head, or None when this
        instance does not know them all."""
        known = self._heads.get(key)
        if known is None:
            return None
        head, numbers = known
        wanted = range(slot + 1, entry_slot(head) + 1)
        if any(s not in numbers for s in wanted):
            return None
        return [numbers[s] for s in wanted]


class KeyedLocks:
    """One ``asyncio.Lock`` per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Any, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
