"""The gateway's outbound connections: one aiohttp session and one S3 client.

Adapters are built by the app factory, before the event loop runs; they hold this object and
reach the connections when they call out. ``open()`` runs in the app's ``cleanup_ctx``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

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
