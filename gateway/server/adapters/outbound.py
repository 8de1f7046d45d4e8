"""The gateway's outbound connections: one aiohttp session and one S3 client.

Adapters are built by the app factory, before the event loop runs; they hold this object and
reach the connections when they call out. ``open()`` runs in the app's ``cleanup_ctx``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp

from gateway.config import StorageConfig
from gateway.server.adapters.aws import open_s3_client

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class Connections:
    def __init__(self, storage: StorageConfig) -> None:
        self._storage = storage
        self._http: aiohttp.ClientSession | None = None
        self._s3: S3Client | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """The outbound session (presigned part PUTs, the http forwarder); it does not
        decompress, so archives pass through as they are."""
        assert self._http is not None, "Connections.open() has not run"
        return self._http

    @property
    def s3(self) -> S3Client:
        assert self._s3 is not None, "Connections.open() has not run"
        return self._s3

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with (
            aiohttp.ClientSession(connector=connector, auto_decompress=False) as http,
            open_s3_client(self._storage) as s3,
        ):
            self._http, self._s3 = http, s3
            try:
                yield
            finally:
                self._http, self._s3 = None, None


@contextlib.contextmanager
def socket_reads_of(response: aiohttp.ClientResponse, size: int) -> Iterator[None]:
    """asyncio's selector transports read 256 KiB per call (``max_size``): a 1 MiB piece of a
    download took four reads, parser passes and loop turns. Reading ``size`` at once while
    ``response``'s body is read took the download hop from 0.80 to 0.65 CPU s per GiB
    (BENCHMARKS.md, "CPU per GiB"); 2-4 MiB cost more (glibc maps such buffers afresh). The body
    is then read as received (``readany``): ``read(n)`` lets aiohttp buffer ``2n`` ahead, which
    doubled what a download whose client stalls holds. Transports without the attribute
    (uvloop's) are left alone; the connection goes back to the pool as it was."""
    connection = response.connection
    transport: Any = connection.transport if connection is not None else None
    if not isinstance(getattr(transport, "max_size", None), int):
        yield
        return
    transport.max_size = size
    try:
        yield
    finally:
        del transport.max_size  # the class's own value again
