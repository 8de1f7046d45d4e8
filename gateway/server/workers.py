"""``gateway serve --workers N``: N processes serving one port, each a full instance, supervised.

Each worker listens on the port itself with ``SO_REUSEPORT``, so the kernel spreads new
connections over the workers (a listening socket shared by all would wake every worker for each
connection and leave most of them to one). The supervisor, the process ``gateway serve`` started:

- makes sure the port is free before starting anyone (``PortInUse`` otherwise);
- starts the workers (``multiprocessing``'s spawn: fresh interpreters, no state forked from a
  process that may run threads) and restarts one that dies, logging how it ended (a worker that
  dies within ``CRASH_WINDOW`` seconds of its start is restarted after a pause, so a worker that
  cannot start does not spin);
- on SIGTERM (or SIGINT) passes SIGTERM on to every worker, each of which drains its requests as a
  single process does (``server.shutdown_timeout``), and waits for them; a worker still there
  ``STOP_GRACE`` seconds later is killed.

``/metrics`` on any worker sums all of them (``gateway.server.observability.shared_metrics``):
the workers publish their figures to a directory the supervisor makes and removes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import wait
from types import FrameType

from gateway.config import Config
from gateway.server.observability.shared_metrics import Worker

log = logging.getLogger("gateway")

# A worker that dies this soon after its start is restarted after RESTART_PAUSE seconds.
CRASH_WINDOW = 5.0
RESTART_PAUSE = 1.0
# Seconds past shutdown_timeout a worker gets to finish its clean-up before it is killed.
STOP_GRACE = 10.0
# How often the supervisor looks at its workers when none has ended.
POLL_SECONDS = 0.5


# What a worker process runs (``gateway.server.serve.run_worker``): a module-level function, as
# multiprocessing's spawn needs, given the configuration and the worker.
WorkerMain = Callable[[Config, Worker], None]


class PortInUse(Exception):
    """Another process listens on the configured port."""

    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} is in use")


def check_port_free(host: str, port: int) -> None:
    """``PortInUse`` when another process listens on ``host:port``."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError:
        raise PortInUse(port) from None
    finally:
        probe.close()


class Supervisor:
    """Runs ``config.server.workers`` workers until SIGTERM/SIGINT (see the module docstring)."""

    def __init__(self, config: Config, main: WorkerMain) -> None:
        self._config = config
        self._main = main
        self._count = config.server.workers
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, tuple[multiprocessing.process.BaseProcess, float]] = {}
        self._stopping = False

    def run(self) -> int:
        """Serve until asked to stop; 0 when every worker stopped cleanly."""
        server = self._config.server
        check_port_free(server.host, server.port)
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(1, self._count + 1):
                self._start(index, metrics_dir)
            log.info("supervising %d workers on %s:%s", self._count, server.host, server.port)
            while not self._stopping:
                self._watch(metrics_dir)
            return self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, index: int, metrics_dir: str) -> None:
        process = self._context.Process(
            target=self._main,
            args=(self._config, Worker(index, metrics_dir)),
            name=f"gateway-worker-{index}",
        )
        process.start()
        self._workers[index] = (process, time.monotonic())
        log.info("worker %d started (pid %s)", index, process.pid)

    def _watch(self, metrics_dir: str) -> None:
        sentinels = {process.sentinel: index for index, (process, _) in self._workers.items()}
        for sentinel in wait(list(sentinels), timeout=POLL_SECONDS):
            if self._stopping or not isinstance(sentinel, int):
                return
            index = sentinels[sentinel]
            process, started = self._workers.pop(index)
            process.join()
            log.warning(
                "worker %d (pid %s) %s; restarting it", index, process.pid, _ending(process)
            )
            if time.monotonic() - started < CRASH_WINDOW:
                time.sleep(RESTART_PAUSE)
            if not self._stopping:
                self._start(index, metrics_dir)

    def _stop_all(self) -> int:
        timeout = self._config.server.shutdown_timeout + STOP_GRACE
        log.info("stopping %d workers (each drains for up to %ss)", len(self._workers), timeout)
        for process, _ in self._workers.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        failed = 0
        for index, (process, _) in sorted(self._workers.items()):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker %d (pid %s) still running; killing it", index, process.pid)
                process.kill()
                process.join()
            if process.exitcode != 0:
                failed += 1
        log.info("all workers stopped")
        return 1 if failed else 0


def _ending(process: multiprocessing.process.BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    return f"exited with status {code}"


def with_workers(config: Config, workers: int | None) -> Config:
    """``config`` with ``server.workers`` set from the command line, when given."""
    if workers is None:
        return config
    server = replace(config.server, workers=workers)
    server.validate("server")  # --workers 0 is refused as the key would be
    return replace(config, server=server)
