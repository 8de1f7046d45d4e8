"""A TCP proxy for tests that cuts connections: the first ``cuts`` connections are closed once
``after`` bytes went from the client to the server; later connections pass untouched.

What a client sees when its network drops mid-upload (a phone at 95%): the request is cut, and
its retry comes on a new connection. With ``stall=True`` the connection is not closed but goes
silent instead (the bytes past ``after`` are swallowed, ``stalled`` is set) until the client
gives up on it: a network that hangs, and a user who presses Ctrl-C.

``until``, when given, is a condition (called in a thread) the proxy waits for before cutting a
connection at ``after`` bytes, at most ``SETTLE_SECONDS``: the server has stored what it got
(its commits, not a guess of how long they take on a busy machine)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from .ports import free_port

PIPE_CHUNK = 64 * 1024
# The longest a cut waits for ``until``.
SETTLE_SECONDS = 30


class DropProxy:
    def __init__(
        self,
        upstream_port: int,
        after: int,
        cuts: int = 1,
        *,
        stall: bool = False,
        linger: float = 0.0,
        then_after: int | None = None,
        until: Callable[[], bool] | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.after = after
        self.cuts_left = cuts
        self.stall = stall
        self.linger = linger  # seconds between the last byte let through and the cut
        self.then_after = then_after  # the budget of the cut connections after the first
        self.until = until
        self.stalled = asyncio.Event()
        self.port = free_port()
        self.connections = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        budget: int | None,
        settle: bool = False,
    ) -> bool:
        """Copy until EOF; True if cut after ``budget`` bytes (once ``until`` holds, with
        ``settle``)."""
        sent = 0
        while chunk := await reader.read(PIPE_CHUNK):
            if budget is not None and sent + len(chunk) > budget:
                writer.write(chunk[: budget - sent])
                await writer.drain()
                if settle and self.until is not None:
                    await self._settled(self.until)
                if self.linger:
                    await asyncio.sleep(self.linger)  # the server takes in what it got
                if self.stall:
                    self.stalled.set()
                    while await reader.read(PIPE_CHUNK):
                        pass  # swallowed, until the client goes
                return True
            sent += len(chunk)
            writer.write(chunk)
            await writer.drain()
        return False

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        cut = self.cuts_left > 0
        if cut:
            self.cuts_left -= 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        back = asyncio.ensure_future(self._pipe(up_r, client_w, None))
        try:
            budget, settle = self.after, True
            if self.dropped and self.then_after is not None:
                budget, settle = self.then_after, False
            if await self._pipe(client_r, up_w, budget if cut else None, settle):
                self.dropped += 1
                for w in (client_w, up_w):
                    w.transport.abort()
                return
            await back
        except (ConnectionError, OSError):
            pass
        finally:
            back.cancel()
            await asyncio.gather(back, return_exceptions=True)
            for w in (client_w, up_w):
                w.transport.abort()
            self._tasks.discard(task)  # type: ignore[arg-type]

    @staticmethod
    async def _settled(until: Callable[[], bool]) -> None:
        for _ in range(SETTLE_SECONDS * 50):
            if await asyncio.to_thread(until):
                return
            await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DropProxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()
