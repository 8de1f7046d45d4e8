"""Where the CLI's words go: informational lines and progress bars on stderr."""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

from gateway.redaction import redact


class Reporter:
    """Where the CLI's words go: informational lines and progress bars on stderr."""

    def __init__(
        self, *, quiet: bool = False, verbose: bool = False, stream: IO[str] | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.verbose = verbose and not quiet

    @property
    def progress_enabled(self) -> bool:
        """Bars only for a person watching: not with --quiet, and only when both stdout and
        stderr are terminals (output captured or piped means a script is running it)."""
        return not self.quiet and sys.stdout.isatty() and self.stream.isatty()

    def info(self, message: str) -> None:
        if not self.quiet:
            print(f"gateway: {message}", file=self.stream, flush=True)

    def debug(self, message: str) -> None:
        if self.verbose:
            print(f"gateway: debug: {redact(message)}", file=self.stream, flush=True)

    def bar(self, total: int | None, description: str) -> tqdm[Any]:
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
