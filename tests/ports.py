"""Ports for the tests' servers: taken below the kernel's ephemeral range.

A port found free and bound a moment later (by a test server, a proxy, a child process) can be
taken meanwhile by the local end of any outgoing connection when it comes from the ephemeral range
(``net.ipv4.ip_local_port_range``, 32768-60999 by default), which is where binding port 0 finds
one: under load that race made tests fail with "Address already in use". Below that range only
another listener can take it, and each one here checks first.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, outside the ephemeral range."""
    high = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(LOWEST, high)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port found between {LOWEST} and {high}")
