"""A download relayed by the kernel: ``splice(2)`` from the store's socket into a pipe and from the
pipe into the client's socket, as HAProxy's ``option splice-response`` does. The body's bytes are
never copied into the process: no parser, no stream reader, no Python per piece.

Taken when both connections are plain TCP (``domain.handover``) and ``sources.download_splice``
is on; otherwise the download is relayed piece by piece as before (``SourceHandlers``). The same
limits hold: the client is given up after ``server.send_timeout`` seconds without taking a byte,
the store after its read timeout without sending one; bytes sent are counted as they go.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable

from aiohttp import web

from gateway.server.domain.handover import SocketRest, plain_socket
from gateway.server.http.streams import ClientStalled, send_within
from gateway.server.observability.access import tally_of

# The pipe between the two sockets: 1 MiB (Linux's default pipe-max-size) moves a download in
# fewer calls than the default 64 KiB; a pipe that cannot grow (the user's pipe quota) still works.
PIPE_SIZE = 1024 * 1024
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
# Waits for asyncio's write buffer to empty, before the relay writes to the socket itself.
_FLUSH_POLL = (0.001, 0.05)


class _StoreFailed(Exception):
    """The store's connection broke, ended early or went silent: ``SocketRest.failed`` turns it
    into the error a failed read raises."""


def client_socket(request: web.Request) -> int | None:
    """The client's socket when a download to it may be spliced (plain TCP), else None."""
    return plain_socket(request.transport)


async def relay(
    request: web.Request,
    response: web.StreamResponse,
    rest: SocketRest,
    send_timeout: float,
    count: Callable[[int], None],
) -> None:
    """Send ``rest`` to the client of ``request`` after ``response``'s headers (sent through
    aiohttp): the head from memory, the remaining bytes by splicing, both written to the socket
    by ``_Pump``. Closes ``rest.fd`` in all cases.

    Raises ``ClientStalled``, ``ConnectionResetError`` (the client went away) or the store's
    failure (``rest.failed``); the response's headers are out by then."""
    try:
        await send_within(response, b"", send_timeout)  # the headers alone
        transport = request.transport
        fd = client_socket(request)
        if transport is None or fd is None:
            raise ConnectionResetError("the client's connection closed")
        await _flushed(transport, send_timeout)
        client = os.dup(fd)
        try:
            tally = tally_of(request)

            def sent(n: int) -> None:
                count(n)
                tally.bytes_out = (tally.bytes_out or 0) + n

            ends = (rest.fd, client)
            pump = _Pump(ends, rest.head, rest.length, sent, (rest.stall_timeout, send_timeout))
            await pump.run()
        finally:
            os.close(client)
    except _StoreFailed as exc:
        raise rest.failed(exc) from None
    finally:
        os.close(rest.fd)


async def _flushed(transport: asyncio.BaseTransport, seconds: float) -> None:
    """Return once asyncio has written everything it holds for ``transport`` (the headers, at
    once but for a client that stopped reading): the relay's bytes must follow them on the
    socket, not overtake them."""
    assert isinstance(transport, asyncio.WriteTransport)
    delay, longest = _FLUSH_POLL
    try:
        async with asyncio.timeout(seconds):
            while transport.get_write_buffer_size():
                if transport.is_closing():
                    raise ConnectionResetError("the client's connection closed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
    except TimeoutError:
        raise ClientStalled from None


class _Pump:
    """Sends ``head`` to the socket ``dst``, then moves ``length`` bytes from the socket ``src``
    to it (both non-blocking) through a pipe, driven by the event loop's readiness callbacks: no
    task, no Python buffer.

    The pipe is drained before more is taken from ``src``: a splice into a pipe that has room for
    bytes but not for more pieces fails as if ``src`` had none, so ``src`` is waited on only with
    the pipe empty. ``timeouts``: (store, client), seconds without progress while waiting."""

    def __init__(
        self,
        ends: tuple[int, int],
        head: bytes,
        length: int,
        sent: Callable[[int], None],
        timeouts: tuple[float, float],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._src, self._dst = ends
        self._head = memoryview(head)
        self._left = length  # still to take from src
        self._in_pipe = 0
        self._sent = sent
        self._stall_timeout, self._send_timeout = timeouts
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._reading = self._writing = False
        self._read_since = self._write_since = self._loop.time()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        try:
            self._ready()
            if not self._done.done():
                self._watch()
            await self._done
        finally:
            self._finish(None)

    def _ready(self) -> None:
        if self._pipe_r < 0:  # finished by the other socket's callback of the same loop turn
            return
        try:
            self._step()
        except Exception as exc:
            self._finish(exc)

    def _step(self) -> None:
        while True:
            took = self._take() if self._left else 0
            gave = self._give() if self._in_pipe or self._head else 0
            if not took and not gave:
                break
        pending = self._in_pipe > 0 or len(self._head) > 0
        if not self._left and not pending:
            self._finish(None)
            return
        self._want(read=self._left > 0 and self._in_pipe == 0, write=pending)

    def _take(self) -> int:
        try:
            n = os.splice(self._src, self._pipe_w, self._left, flags=_FLAGS)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise _StoreFailed(f"the store's connection broke: {exc}") from exc
        if n == 0:
            raise _StoreFailed(f"the store closed the connection {self._left} bytes short")
        self._left -= n
        self._in_pipe += n
        self._read_since = self._loop.time()
        return n

    def _give(self) -> int:
        try:
            if self._head:  # what aiohttp had received of the body goes first
                n = os.write(self._dst, self._head)
                self._head = self._head[n:]
            else:
                n = os.splice(self._pipe_r, self._dst, self._in_pipe, flags=_FLAGS)
                self._in_pipe -= n
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:  # EPIPE, ECONNRESET, ...: the client is gone
            raise ConnectionResetError(f"the client's connection broke: {exc}") from exc
        if n == 0:
            raise ConnectionResetError("the client's connection took nothing")
        self._write_since = self._loop.time()
        self._sent(n)
        return n

    def _want(self, *, read: bool, write: bool) -> None:
        loop, now = self._loop, self._loop.time()
        if read != self._reading:
            if read:
                loop.add_reader(self._src, self._ready)
                self._read_since = now
            else:
                loop.remove_reader(self._src)
            self._reading = read
        if write != self._writing:
            if write:
                loop.add_writer(self._dst, self._ready)
                self._write_since = now
            else:
                loop.remove_writer(self._dst)
            self._writing = write

    def _watch(self) -> None:
        """Every quarter of the shorter timeout: give up a side that made no progress for long."""
        now = self._loop.time()
        if self._writing and now - self._write_since > self._send_timeout:
            self._finish(ClientStalled())
        elif self._reading and now - self._read_since > self._stall_timeout:
            self._finish(_StoreFailed(f"the store sent nothing for {self._stall_timeout:g}s"))
        else:
            tick = min(self._stall_timeout, self._send_timeout) / 4
            self._timer = self._loop.call_later(tick, self._watch)

    def _finish(self, exc: Exception | None) -> None:
        """Stop watching both sockets and close the pipe (once); end ``run`` with ``exc``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pipe_r >= 0:
            self._want(read=False, write=False)
            os.close(self._pipe_r)
            os.close(self._pipe_w)
            self._pipe_r = self._pipe_w = -1
        if not self._done.done():
            if exc is None:
                self._done.set_result(None)
            else:
                self._done.set_exception(exc)
