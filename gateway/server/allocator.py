"""glibc's malloc, told to keep the memory upload bodies pass through instead of handing it back to
the kernel after every part.

An upload's body arrives in reads of up to 256 KiB, each a new bytes object, and a resumable
upload keeps up to two parts' worth of them until S3 has the part (``resumable_stream``). When
they are freed together, glibc gives the top of its heap back to the kernel once more than its
trim threshold is free there (dynamically, twice the largest block it last mapped alone: 512 KiB
here), and the next reads fault those pages in again, zeroed by the kernel. Measured on 8 MiB
PATCHes, copying the body out of the socket cost 705 us per MiB that way, 215 us with the heap
kept (BENCHMARKS.md, "Resumable uploads"). So at start the gateway sets the trim threshold to two
parts (at most ``max_buffer_bytes``), and the size from which blocks are mapped alone to 1 MiB
(setting one threshold freezes the other at glibc's 128 KiB, which would map every read).

What it costs: up to that much freed memory stays in the process (16 MiB by default). An
operator who sets glibc's own variables (``MALLOC_TRIM_THRESHOLD_``...) keeps their values; other
C libraries (musl) are left alone.
"""

from __future__ import annotations

import ctypes
import os

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1024 * 1024
# glibc's variables for the same settings: set, they are the operator's choice.
GLIBC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(part_size: int, max_buffer: int) -> bool:
    """Keep up to two parts of freed memory in the heap (see the module docstring). Whether the
    allocator took the settings (False off glibc, or with glibc's variables set)."""
    if any(name in os.environ for name in GLIBC_VARIABLES) or not _glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    keep = min(2 * part_size, max_buffer, 2**31 - 1)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_TRIM_THRESHOLD, keep))


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (OSError, ValueError):  # a platform without that name
        return False
