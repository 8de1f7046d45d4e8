"""The formats the archive check reads: gzip members, tar header fields, PAX records, links.

Pure functions and one small inflater; ``archive.ArchiveInspector`` puts them together.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from typing import Any, cast

from isal import isal_zlib

from ...errors import ArchiveInvalid

# Inflated bytes per inflate call: what one call may hold, and how far past
# max_inflated_bytes a decompression bomb gets before it is cut.
OUT_CHUNK = 256 * 1024
# Links followed when resolving one symbolic link, as Linux's own limit (ELOOP after 40).
MAX_LINK_HOPS = 40
BLOCK = 512
GZIP_MAGIC = b"\x1f\x8b"
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
# isal's stubs declare its error class as an instance of Exception; it is a class.
_INFLATE_ERROR = cast(type[Exception], isal_zlib.error)
# The file-type bits of a mode.
_S_IFMT = 0o170000


def show(name: bytes) -> str:
    """An entry name as it appears in a reason: quoted, control characters escaped, cut short."""
    text = name.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 200 else text[:200] + "...")


class Gunzip:
    """Inflates a stream of gzip members (``gzip -c a b`` makes several) in bounded pieces."""

    def __init__(self) -> None:
        self._inflater: Any = None  # the member being inflated; None between members
        self._members = 0
        self._padding = False  # zero bytes after the last member, as tape tools write

    def inflate(self, data: bytes) -> Iterator[bytes]:
        """Yield the inflated bytes of ``data``, at most ``OUT_CHUNK`` at a time."""
        while True:
            if self._inflater is None:
                if not data:
                    return
                self._start_member(data)
                if self._padding:
                    return
            inflater = self._inflater
            try:
                out = inflater.decompress(data, OUT_CHUNK)
            except _INFLATE_ERROR as exc:
                raise ArchiveInvalid(f"corrupt gzip stream ({exc})") from None
            if out:
                yield out
            if inflater.eof:
                self._members += 1
                self._inflater = None
                data = inflater.unused_data
            else:
                data = inflater.unconsumed_tail
                if not data and len(out) < OUT_CHUNK:
                    return  # a full piece may leave output pending: ask again with no input

    def _start_member(self, data: bytes) -> None:
        if self._padding or (self._members and data[0] == 0):
            self._padding = True
            if data.count(0) != len(data):
                raise ArchiveInvalid("data after the end of the gzip stream")
            return
        if not GZIP_MAGIC.startswith(data[:2]):
            raise ArchiveInvalid(
                "data after the end of the gzip stream" if self._members else "not gzip"
            )
        self._inflater = isal_zlib.decompressobj(31)

    def finish(self) -> None:
        if self._inflater is not None:
            raise ArchiveInvalid("gzip stream cut short (truncated)")
        if not self._members:
            raise ArchiveInvalid("not gzip (empty body)")


def number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (first byte 0x80) for large values."""
    if field[0] & 0x80:
        if field[0] == 0x80:
            return int.from_bytes(field[1:], "big")
        raise ValueError("negative number")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def checksum(block: bytes) -> int:
    # Sum of the header's bytes with the checksum field read as spaces. adler32's low half is
    # 1 + the byte sum (mod 65521), exact for 256 bytes or fewer: C speed, no per-byte Python.
    adler = zlib.adler32
    return (
        (adler(block[:256]) & 0xFFFF)
        + (adler(block[256:]) & 0xFFFF)
        - (adler(block[148:156]) & 0xFFFF)
        - 1
        + 8 * 32
    )


def signed_checksum(block: bytes) -> int:
    # Some old writers summed the bytes as signed chars; tar and Python's tarfile accept both.
    high = sum(1 for b in block[:148] + block[156:] if b >= 0x80)
    return checksum(block) - 256 * high


def mode_type(field: bytes) -> int:
    try:
        return number(field) & _S_IFMT
    except ValueError:
        return 0  # tar and tarfile read a bad mode as 0 too


def pax_records(data: bytes) -> dict[bytes, bytes]:
    """Parse PAX extended header records, ``"<length> <key>=<value>\\n"``."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 24)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n"):
            raise ArchiveInvalid("malformed PAX extended header")
        key, equals, value = record[:-1].partition(b"=")
        if not equals:
            raise ArchiveInvalid("malformed PAX extended header")
        records[key] = value
        pos += length
    return records


def climbs_out(name_parts: list[bytes], target: bytes) -> bool:
    """Whether ``target``, read by name from the directory of the link at ``name_parts``, is
    absolute or climbs above the root (without following other links: see ``resolves_outside``)."""
    if target.startswith(b"/"):
        return True
    depth = len(name_parts) - 1
    for part in target.split(b"/"):
        if part == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in (b"", b"."):
            depth += 1
    return False


def resolves_outside(links: dict[bytes, bytes], name: bytes, target: bytes) -> bool:
    """Whether the link ``name`` -> ``target`` leads outside the root once every link of the
    archive on its way is followed, as the file system will once it is unpacked."""
    path: list[bytes] = []
    todo = parts(name)[:-1] + target.split(b"/")
    todo.reverse()
    hops = 0
    while todo:
        part = todo.pop()
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not path:
                return True
            path.pop()
            continue
        path.append(part)
        via = links.get(b"/".join(path))
        if via is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                return False  # a loop: it leads nowhere, so not out either
            if via.startswith(b"/"):
                return True
            path.pop()
            todo.extend(reversed(via.split(b"/")))
    return False


def parts(name: bytes) -> list[bytes]:
    return [part for part in name.split(b"/") if part and part != b"."]
