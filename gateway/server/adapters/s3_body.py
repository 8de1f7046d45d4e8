"""A GetObject's body: the pieces aiohttp receives, or the rest handed over as the connection's
socket (``gateway.server.domain.handover``) for a download relayed with ``splice(2)``."""

from __future__ import annotations

import os
from collections.abc import Callable

import aiohttp

from gateway.server.domain.handover import SocketRest, plain_socket

# Only bytes that are the object's own can be moved as they arrive.
_IDENTITY = ("", "identity")


class S3Body:
    """The body of ``response`` as received (``readany``): half the memory of ``read(n)`` for a
    download whose client stalls (aiohttp buffers ``2n`` ahead of ``read(n)``).

    ``size``: the bytes asked for; ``failed`` turns a failure of the read into the error to raise
    (and counts it)."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        size: int,
        stall_timeout: float,
        failed: Callable[[Exception], Exception],
    ) -> None:
        self._response = response
        self._size = size  # the bytes asked for: a store that ignored the Range sends more
        self._content = response.content
        self._stall_timeout = stall_timeout
        self._failed = failed
        self.detached = False

    def __aiter__(self) -> S3Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failed(exc) from None
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def detach(self) -> SocketRest | None:
        """The rest of the body as a ``SocketRest`` (see ``Detachable``): what aiohttp received
        and did not hand out yet, then the connection's socket, which aiohttp no longer reads."""
        response, content = self._response, self._content
        connection = response.connection
        if connection is None or connection.protocol is None:
            return None
        fd = plain_socket(connection.transport)
        headers = response.headers
        length = response.content_length
        if (
            fd is None
            or length != self._size
            or headers.get("Content-Encoding", "").lower() not in _IDENTITY
            or "Transfer-Encoding" in headers
            or content.exception() is not None
            or content.is_eof()  # all of it received already: nothing to hand over
        ):
            return None
        try:
            taken = os.dup(fd)
        except OSError:  # out of file descriptors: read as before
            return None
        # Nothing runs between these lines and the pause: no bytes can arrive in between. Taking
        # the buffer may resume reading (flow control); the pause after it stops it for good, and
        # the read timeout with it. The parser hands a body with a Content-Length on whole, so
        # aiohttp holds nothing of it beyond the buffer.
        head = content.read_nowait(-1)
        connection.protocol.pause_reading()
        self.detached = True
        return SocketRest(
            head=head,
            fd=taken,
            length=length - content.total_bytes,
            stall_timeout=self._stall_timeout,
            failed=self._failed,
        )
