"""The checks a resumable upload's bytes go through (size, sha256, the archive check), and the
ones an instance carries from one request of an upload to the next.

A ``Verifier`` is fed the upload's bytes in order from the first; the ``Finisher`` judges the
upload with it at completion. ``Carried`` keeps the verifier of an upload whose last request
ended on this instance, at the offset it has seen, for the next request reaching it there.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

from gateway.server.domain.archive.check import ArchiveCheck
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.upload_state import UploadState
from gateway.server.domain.uploads import BufferBudget

# Verifiers an instance keeps for the next append of their upload, and for how long (seconds)
# an unused one is kept: each holds its archive check's state and up to a batch of bytes.
MAX_CARRIED = 64
CARRIED_IDLE_SECONDS = 900


class Verifier:
    """Size, sha256 and archive check over an upload's bytes, fed in order from the first."""

    def __init__(self, check: ArchiveCheck | None) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._check = check
        # A feed that raised (a refusal, a cancellation) may have left the check half-fed:
        # such a verifier judges nothing more, and is never carried to another request.
        self.broken = False

    async def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._sha256.update(chunk)
        if self._check is not None:
            try:
                await self._check.feed(chunk)
            except BaseException:
                self.broken = True
                raise

    async def finish(self) -> tuple[str, ArchiveFacts | None]:
        """The sha256 (hex) and the archive's facts; ``ArchiveInvalid`` in enforce mode."""
        self.broken = True  # judged: it takes no more bytes
        facts = await self._check.finish() if self._check is not None else None
        return self._sha256.hexdigest(), facts

    def fall_behind(self, budget: BufferBudget, size: int) -> Callable[[], None]:
        """Let the archive check fall up to ``size`` bytes behind the bytes fed (bytes the caller
        keeps until the store has them anyway) if ``budget`` has room for them now: they count
        there until checked. Returns what the caller calls when done feeding: the room is given
        back once the bytes fed until then are checked."""
        if self._check is None or size <= self._check.batch_size:
            return _nothing  # it falls a batch behind anyway
        taken = budget.try_acquire(size)
        self._check.fall_behind(taken)
        if not taken:
            return _nothing
        return lambda: self.when_checked(lambda: budget.release(taken))

    def when_checked(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the bytes fed so far (but a last batch still filling) are
        checked, or given up: now, if they are. They stay in memory until then."""
        if self._check is not None:
            self._check.when_checked(callback)
        else:
            callback()

    def close(self) -> None:
        if self._check is not None:
            self._check.close()


class Carried:
    """The verifiers of uploads whose last request ended on this instance, each at the offset it
    has seen: the next append that reaches this instance at that offset goes on with it, and the
    upload completes without being read back (SPEC: "an instance may instead carry its running
    checks in memory"). At most ``MAX_CARRIED``, each for ``CARRIED_IDLE_SECONDS``; one taken
    is the taker's alone."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._kept: OrderedDict[tuple[str, str], tuple[int, float, Verifier]] = OrderedDict()

    def take(self, state: UploadState) -> Verifier | None:
        """The verifier that has seen exactly the upload's committed bytes, or None."""
        kept = self._kept.pop((state.source_id, state.upload_id), None)
        if kept is None:
            return None
        offset, _, verifier = kept
        if offset != state.offset or verifier.size != offset:
            verifier.close()  # other bytes were committed since, elsewhere
            return None
        return verifier

    def keep(self, state: UploadState, verifier: Verifier, committed: int) -> None:
        """Keep ``verifier`` for the next append if it has seen exactly the ``committed`` bytes
        of the open upload and nothing went wrong in it; else close it."""
        if verifier.broken or verifier.size != committed or state.status != "open":
            verifier.close()
            return
        now = self._clock()
        key = (state.source_id, state.upload_id)
        self._kept[key] = (committed, now, verifier)
        self._kept.move_to_end(key)
        while self._kept:
            oldest_key, (_, since, oldest) = next(iter(self._kept.items()))
            if len(self._kept) <= MAX_CARRIED and since > now - CARRIED_IDLE_SECONDS:
                break
            del self._kept[oldest_key]
            oldest.close()

    def drop(self, state: UploadState) -> None:
        kept = self._kept.pop((state.source_id, state.upload_id), None)
        if kept is not None:
            kept[2].close()

    def __len__(self) -> int:
        return len(self._kept)


def _nothing() -> None:
    pass
