"""A read from the object store handed over as the socket its bytes arrive on, so that a download
can be relayed with ``splice(2)`` (``gateway.server.http.splice``) instead of through Python.

The store's read stream offers ``detach()`` when it can (``Detachable``); the relay takes the
socket only when the client's connection is plain TCP as well (``plain_socket``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

# asyncio's own socket transport: what is written to its socket is the bytes on the wire. TLS
# transports wrap it (their socket carries records), and uvloop's are of another class.
_PLAIN_TRANSPORT: Any = getattr(
    getattr(asyncio, "selector_events", None), "_SelectorSocketTransport", None
)


@dataclass(frozen=True)
class SocketRest:
    """The rest of a read, handed over: send ``head``, then ``length`` more bytes that arrive on
    ``fd``. ``fd`` is a duplicate of the store connection's non-blocking socket, owned by the taker
    (it closes it); the store's side never reads the connection again and closes it, never reused.
    """

    head: bytes
    fd: int
    length: int
    # The store's read timeout: the store is given up when it sends nothing for this long.
    stall_timeout: float
    # Counts and logs a failure of the store midway (as a failed read would); returns the error to
    # raise in its place.
    failed: Callable[[Exception], Exception]


@runtime_checkable
class Detachable(Protocol):
    def detach(self) -> SocketRest | None:
        """The rest of this stream as a ``SocketRest``, or None when it cannot be handed over (TLS,
        an encoded or chunked answer, nothing left to receive, another event loop); the stream is
        then unchanged and read as before. After a handover the stream is not iterated again."""


def plain_socket(transport: object) -> int | None:
    """The file descriptor of the socket under ``transport`` when bytes written to it directly
    reach the peer as they are (asyncio's selector transport, no TLS) and ``splice(2)`` is there
    (Linux); else None. The transport keeps it: a taker works on a duplicate (``os.dup``)."""
    if _PLAIN_TRANSPORT is None or not hasattr(os, "splice"):
        return None
    if not isinstance(transport, _PLAIN_TRANSPORT) or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    fd = sock.fileno()
    return fd if isinstance(fd, int) and fd >= 0 else None
