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
        """The whole object as a stream of chunks and its description (as ``stat`` gives it, of
        the version whose bytes come). Raises as ``stat`` and ``read`` do, before anything is
        streamed."""
