"""The formats the archive check reads: gzip members, tar header fields, PAX records, links.

Pure functions and one small inflater; ``inspector.ArchiveInspector`` puts them together.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from typing import Any, cast

from isal import igzip_lib

from ....errors import ArchiveInvalid

# Inflated bytes per inflate call: what one call may hold, and how far past
# max_inflated_bytes a decompression bomb gets before it is cut.
OUT_CHUNK = 256 * 1024
BLOCK = 512
GZIP_MAGIC = b"\x1f\x8b"
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
# isal's stubs declare its error class as an instance of Exception; it is a class.
_INFLATE_ERROR = cast(type[Exception], igzip_lib.IsalError)
# The file-type bits of a mode.
_S_IFMT = 0o170000
# Octal header numbers as GNU tar and tarfile both read them (``number``).
_OCTAL = re.compile(rb" *([0-7]+)(?:[ \0][ \0]*)?")
# A PAX record's start: its length (plain digits; a record is at most an extended header, 1 MiB,
# 7 digits), a space, its key and "=". One regex match a record: they may be six bytes each.
_PAX_RECORD = re.compile(rb"([0-9]{1,7}) ([^=\n]*)=")
# Digits of a PAX size: 10**18 bytes is past any limit, and int() of a long string is slow.
MAX_PAX_NUMBER_DIGITS = 18
# Type flags ``tarfile`` joins no prefix to: GNU long name, long link, old sparse.
_GNU_TYPES = frozenset(b"LKS")


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
            elif inflater.needs_input:
                return
            else:
                data = b""  # the piece was full and output is pending: ask again, no new input

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
        # ISA-L's own streaming API: it keeps unconsumed input itself, where the zlib-like one
        # copies it out as ``unconsumed_tail`` at every call (5% more CPU on a source tree).
        self._inflater = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)

    def finish(self) -> None:
        if self._inflater is not None:
            raise ArchiveInvalid("gzip stream cut short (truncated)")
        if not self._members:
            raise ArchiveInvalid("not gzip (empty body)")


def number(field: bytes) -> int:
    """A numeric header field, read only in the form every extractor reads alike: GNU base-256
    (first byte 0x80), or octal digits after optional spaces, ended by a space, a NUL or the end
    of the field with nothing but spaces and NULs after them; all NULs is 0. Anything else (a
    sign, ``_``, a NUL before the digits, which GNU tar skips and ``tarfile`` stops at) raises
    ``ValueError``: readers disagree on it, or walk backwards on a negative size."""
    if field[0] & 0x80:
        if field[0] == 0x80:
            return int.from_bytes(field[1:], "big")
        raise ValueError("negative number")
    digits = field.rstrip(b" \0")
    if digits.isdigit():  # what writers write ("%011o\0"): int() refuses an 8 or a 9
        return int(digits, 8)
    match = _OCTAL.fullmatch(field)
    if match is None:
        if field.count(0) == len(field):
            return 0
        raise ValueError("not an octal number")
    return int(match[1], 8)


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


def pax_records(
    data: bytes, keep: frozenset[bytes], most: int
) -> tuple[list[tuple[bytes, bytes]], int]:
    """The records of a PAX extended header, ``"<length> <key>=<value>\\n"``, whose key is in
    ``keep``, in order (a key may repeat), and how many records it has: ``ValueError`` past
    ``most``. Every record is checked, the others dropped as they are read: a header of many
    small records costs no memory. The length is plain decimal digits."""
    records = []
    pos = count = 0
    size, match = len(data), _PAX_RECORD.match
    while pos < size and data[pos] != 0:
        count += 1
        if count > most:
            raise ValueError("too many records")
        found = match(data, pos)
        end = pos + int(found[1]) if found else pos
        if found is None or end <= found.end() or end > size or data[end - 1] != 0x0A:
            raise ArchiveInvalid("malformed PAX extended header")
        key = found[2]
        if key in keep:
            records.append((key, data[found.end() : end - 1]))
        pos = end
    return records, count


def pax_number(value: bytes) -> int:
    """A PAX numeric value (``size``): decimal digits only, no sign, space or ``_``."""
    if not value.isdigit() or len(value) > MAX_PAX_NUMBER_DIGITS:
        raise ValueError("not a PAX number")
    return int(value)


def header_names(block: bytes, kind: int) -> list[bytes]:
    """The names extractors read from a header's own fields (no GNU long name or PAX record):
    first GNU tar's and libarchive's (the ustar ``prefix`` joined only under POSIX magic), then
    the others where they differ: Python's ``tarfile`` joins a non-empty prefix under any magic
    (except to GNU long name, long link and sparse headers), Go's ``archive/tar`` reads a 131-byte
    prefix in star headers (``tar\\0`` at the end of the block)."""
    name = block[:100].split(b"\0", 1)[0]
    if not block[345]:
        return [name]
    prefix = block[345:500].split(b"\0", 1)[0]
    posix = block[257:263] == b"ustar\0"
    names = [prefix + b"/" + name if posix else name]
    if kind not in _GNU_TYPES and not posix:
        names.append(prefix + b"/" + name)
    if posix and kind in _GNU_TYPES:
        names.append(name)
    if posix and block[508:512] == b"tar\0":
        star = block[345:476].split(b"\0", 1)[0]
        names.append(star + b"/" + name if star else name)
    return names


def climbs_out(name_parts: list[bytes], target: bytes) -> bool:
    """Whether ``target``, read by name from the directory of the link at ``name_parts``, is
    absolute or climbs above the root (without following other links: see ``links``)."""
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


def parts(name: bytes) -> list[bytes]:
    return [part for part in name.split(b"/") if part and part != b"."]
