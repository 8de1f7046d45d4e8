"""Where the CLI's words go: informational lines and progress on stderr.

Progress (tqdm's bars, and a line with the time elapsed while waiting) is drawn whenever stderr is
a terminal, whatever stdout is: ``gateway deploy ... > deployment.json`` still shows the upload.
It is off with ``--quiet``, when stderr is not a terminal (nothing but plain lines reach a log
file) and when ``NO_COLOR`` is set (https://no-color.org: no colour, and we also draw no bar,
whose carriage returns are control codes too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

from tqdm import tqdm

from gateway.redaction import redact

# How often a waiting line redraws its clock.
WAIT_REFRESH_SECONDS = 1.0


def progress_allowed(stream: IO[str], quiet: bool) -> bool:
    """Whether to draw progress on ``stream``: a terminal, not --quiet, NO_COLOR unset."""
    if quiet or os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


class Reporter:
    """Where the CLI's words go: informational lines and progress on stderr."""

    def __init__(
        self, *, quiet: bool = False, verbose: bool = False, stream: IO[str] | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.verbose = verbose and not quiet

    @property
    def progress_enabled(self) -> bool:
        return progress_allowed(self.stream, self.quiet)

    def info(self, message: str) -> None:
        if not self.quiet:
            print(f"gateway: {message}", file=self.stream, flush=True)

    def warning(self, message: str) -> None:
        """Said even with --quiet: something the user must act on."""
        print(f"gateway: warning: {message}", file=self.stream, flush=True)

    def debug(self, message: str) -> None:
        if self.verbose:
            print(f"gateway: debug: {redact(message)}", file=self.stream, flush=True)

    def bar(self, total: int | None, description: str) -> tqdm[Any]:
        """A byte counter: percentage, rate and time left when ``total`` is known."""
        return tqdm(
            total=total,
            desc=description,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.stream,
            disable=not self.progress_enabled,
            leave=True,
            dynamic_ncols=True,
        )

    @contextlib.contextmanager
    def waiting(self, description: str) -> Iterator[None]:
        """A line saying what we wait for, with the time elapsed, gone when the wait ends."""
        with Waiting(self.stream, self.progress_enabled) as line:
            line.show(description)
            yield


class Waiting:
    """One redrawn line, ``gateway: <what> [mm:ss]``, shown while the event loop waits.

    ``show`` (re)starts it with another text, ``hide`` removes it; both are cheap no-ops when
    progress is off. The clock is redrawn by a task of the running loop."""

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._bar: tqdm[Any] | None = None
        self._ticker: asyncio.Task[None] | None = None

    def __enter__(self) -> Waiting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hide()

    def show(self, description: str) -> None:
        if not self._enabled:
            return
        self.hide()
        self._bar = tqdm(
            total=None,
            desc=f"gateway: {description}",
            bar_format="{desc} [{elapsed}]",
            file=self._stream,
            leave=False,
            dynamic_ncols=True,
        )
        self._ticker = asyncio.get_running_loop().create_task(self._tick(self._bar))

    async def _tick(self, bar: tqdm[Any]) -> None:
        while True:
            await asyncio.sleep(WAIT_REFRESH_SECONDS)
            bar.refresh()

    def hide(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def describe_archive(archive: dict[str, Any] | None) -> str | None:
    """One line of what the gateway's archive check found, or None when it did not check."""
    if archive is None:
        return None
    try:
        line = (
            f"archive: {int(archive['entries'])} entries ({int(archive['files'])} files),"
            f" {format_size(int(archive['inflated_size']))} unpacked"
        )
    except (KeyError, TypeError, ValueError):
        return None
    root = archive.get("root")
    line += f", all under {root}" if isinstance(root, str) else ", at the top level"
    problem = archive.get("problem")
    if isinstance(problem, str):
        line += f"; the gateway would refuse it: {problem}"
    return line
