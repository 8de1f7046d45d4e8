"""A whole object opened together with its description: the store asks for the bytes while it
looks the object up, not after, so a plain download's first byte comes one round trip sooner."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from gateway.server.domain.storage import ObjectInfo


@runtime_checkable
class DescribedReads(Protocol):
    def open(
        self, key: str
    ) -> contextlib.AbstractAsyncContextManager[tuple[ObjectInfo, AsyncIterator[bytes]]]:
        """``stat(key)`` and the whole object as a stream of chunks, the bytes of the version
        described (``ObjectChanged`` if it was replaced between the two). Raises as ``stat`` and
        ``read`` do, before anything is streamed."""
