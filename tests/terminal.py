"""Running the installed ``gateway`` script on a pseudo-terminal (Python's ``pty``), as a person at
a terminal runs it: stderr (and, when asked, stdout and stdin) on the terminal, which is the
process's controlling terminal, so that Ctrl-C typed on it reaches it as SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GATEWAY = str(Path(sys.executable).parent / "gateway")
# Makes the terminal the controlling one of a new session, then runs the command: the child of
# a test cannot get one otherwise (subprocess offers no TIOCSCTTY, and fork() in a threaded
# pytest warns).
WITH_TERMINAL = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0);"
    " os.execvp(sys.argv[1], sys.argv[1:])"
)
CTRL_C = b"\x03"


@dataclass
class TerminalRun:
    code: int
    terminal: str  # what the terminal showed (stderr, and stdout when it was the terminal too)
    out: str  # stdout when it was redirected to a file, else ""


def run_on_terminal(
    argv: list[str],
    *,
    env: dict[str, str],
    stdout_on_terminal: bool = False,
    ctrl_c_when: Callable[[str], bool] | None = None,
    timeout: float = 60.0,
    columns: int = 120,
) -> TerminalRun:
    """Run ``gateway ARGV`` with stderr (and stdin) on a new pseudo-terminal; stdout on it too, or
    into a file. Types Ctrl-C once ``ctrl_c_when(what the terminal shows)`` is true."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    # What the program writes, byte for byte: no \n -> \r\n, which would read as control codes.
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    with contextlib.ExitStack() as stack:
        stack.callback(os.close, master)
        out_file = stack.enter_context(tempfile.TemporaryFile())
        proc = subprocess.Popen(
            [sys.executable, "-c", WITH_TERMINAL, GATEWAY, *argv],
            stdin=slave,
            stdout=slave if stdout_on_terminal else out_file,
            stderr=slave,
            env=env,
        )
        os.close(slave)
        shown = _read_terminal(master, proc, ctrl_c_when, time.monotonic() + timeout)
        code = proc.wait(timeout=10)
        out_file.seek(0)
        out = out_file.read().decode()
    return TerminalRun(code, shown.decode(errors="replace"), out)


def _read_terminal(
    master: int,
    proc: subprocess.Popen[bytes],
    ctrl_c_when: Callable[[str], bool] | None,
    deadline: float,
) -> bytes:
    shown = b""
    typed = False
    os.set_blocking(master, False)
    while True:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"still running after the timeout; showed {shown!r}")
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            if proc.poll() is not None:
                time.sleep(0.05)
                with contextlib.suppress(BlockingIOError, OSError):
                    shown += os.read(master, 65536)
                return shown
            time.sleep(0.02)
            continue
        except OSError:  # EIO: every copy of the terminal's other end is closed
            return shown
        if not chunk:
            return shown
        shown += chunk
        if ctrl_c_when is not None and not typed and ctrl_c_when(shown.decode(errors="replace")):
            os.write(master, CTRL_C)
            typed = True


async def on_terminal(argv: list[str], **kwargs: object) -> TerminalRun:
    """``run_on_terminal`` off the test's event loop (the servers under test run on it)."""
    return await asyncio.to_thread(run_on_terminal, argv, **kwargs)  # type: ignore[arg-type]
