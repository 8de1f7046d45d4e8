"""The runner: listen, and on SIGTERM stop accepting and drain what is in flight."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import signal
from urllib.parse import urlsplit

from aiohttp import web

from gateway.config import Config, ServerConfig
from gateway.server import keys
from gateway.server.allocator import keep_freed_memory
from gateway.server.app import create_app
from gateway.server.inbound import GatewayRunner
from gateway.server.observability.logs import configure_logging
from gateway.server.observability.shared_metrics import Worker
from gateway.server.workers import PortInUse as PortInUse
from gateway.server.workers import Supervisor

log = logging.getLogger("gateway")


# After shutdown_timeout, what requests still running get to notice their cancellation.
CANCEL_GRACE_SECONDS = 1.0


def public_url_mismatch(server: ServerConfig) -> str | None:
    """A warning when ``public_url`` names this machine on a port other than the listening one:
    every URL handed out would then miss the gateway (a newcomer who changed only ``port``)."""
    parts = urlsplit(server.public_url)
    host = parts.hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if not local or port == server.port:
        return None
    return (
        f"server.public_url {server.public_url} is port {port} of this machine, but the gateway "
        f"listens on port {server.port}: the upload and download URLs it hands out will not reach "
        f"it (unless a local proxy forwards {port} to {server.port}). Set public_url to match."
    )


def serve(config: Config) -> int:
    """Run the gateway until SIGINT/SIGTERM; in-flight transfers get ``shutdown_timeout``. With
    ``server.workers`` above 1, that many supervised worker processes. The exit status."""
    if config.server.workers > 1:
        return Supervisor(config, run_worker).run()
    asyncio.run(_serve(create_app(config), config))
    return 0


def run_worker(config: Config, worker: Worker) -> None:
    """A worker process: the gateway as one process serves, on a port the workers share."""
    configure_logging(
        config.logging.level, config.logging.json, worker=worker.index, secrets=config.secrets()
    )
    # Ctrl-C in a terminal reaches every process of the group: the supervisor alone decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    app = create_app(config, worker=worker)
    asyncio.run(_serve(app, config, reuse_port=True))


async def _serve(app: web.Application, config: Config, *, reuse_port: bool = False) -> None:
    """Serve ``app``; on SIGTERM stop accepting, drain in-flight requests, then clean up.

    aiohttp's ``run_app`` waits for running handlers on shutdown, but (3.14) its first step closes
    every connection to further input, so an upload whose body is still arriving stalls until the
    timeout and is lost. Here the listening socket closes first, and the connections stay open
    until their requests are done or ``shutdown_timeout`` has passed."""
    server = config.server
    keep_freed_memory(config.sources.part_size_bytes, config.sources.max_buffer_bytes)
    runner = GatewayRunner(
        app,
        header_timeout=server.header_timeout,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=CANCEL_GRACE_SECONDS,
    )
    await runner.setup()
    try:
        # Workers each listen with SO_REUSEPORT: the kernel spreads connections over them.
        site = web.TCPSite(runner, server.host, server.port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(server.port) from None
            raise
        log.info("serving on %s:%s, public URL %s", server.host, server.port, server.public_url)
        if (mismatch := public_url_mismatch(server)) is not None:
            log.warning("%s", mismatch)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

        active = app[keys.ACTIVE_REQUESTS]
        active.draining = True
        await site.stop()
        log.info(
            "shutting down: stopped accepting, %d requests in flight get up to %ss",
            active.count,
            server.shutdown_timeout,
        )
        try:
            async with asyncio.timeout(server.shutdown_timeout):
                await active.wait_idle()
        except TimeoutError:
            log.warning(
                "shutdown_timeout reached: cancelling %d requests still in flight", active.count
            )
    finally:
        try:
            await runner.cleanup()
        finally:
            # Also when a cleanup step failed (the app's own close then did not run).
            app[keys.ACCESS_LOG].close()
    log.info("stopped")
