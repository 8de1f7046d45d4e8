"""Checking an upload as it streams: gunzip it, read its tar headers, refuse what is unsafe.

``ArchiveInspector`` is fed the body chunk by chunk and keeps only a few counters, one partial
512-byte header, the name records of the next entry (``names``) and the archive's symbolic
links (``links``), each bounded: inflated data is looked at once and dropped. Header fields are
parsed per 512-byte record and file data is skipped by offset, so the Python work grows with the
number of entries, not of bytes; inflating (ISA-L, which lets go of the GIL) is the cost.
``ArchiveCheck`` runs the inspector off the event loop for one upload.
"""

from __future__ import annotations

from typing import Literal

from ....errors import ArchiveInvalid
from .facts import ArchiveFacts
from .format import (
    BLOCK,
    CONTROL,
    Gunzip,
    checksum,
    climbs_out,
    mode_type,
    number,
    parts,
    show,
    signed_checksum,
)
from .links import LinkTree
from .names import MAX_LONG_BYTES, MAX_NAME_BYTES, PendingRecords

Mode = Literal["enforce", "report", "off"]
MODES: tuple[Mode, ...] = ("enforce", "report", "off")

# A PAX header is held whole until it is parsed; real ones are a few hundred bytes, with
# extended attributes (at most 64 KiB each) a few KiB.
MAX_META_BYTES = 1024 * 1024
# Bytes handed to the inflating thread at once: the thread hop is paid per batch, not per chunk.
BATCH_BYTES = 1024 * 1024
ZERO_BLOCK = bytes(BLOCK)

# Type flags (POSIX ustar, GNU, PAX).
_SYMLINK, _HARDLINK, _DIR = ord("2"), ord("1"), ord("5")
_REFUSED_TYPES = {ord("3"): "character device", ord("4"): "block device", ord("6"): "FIFO"}
_META_TYPES = frozenset(b"LKxg")  # GNU long name/link, PAX local/global
# Solaris's extended header: tarfile and GNU tar read it as PAX, Go's archive/tar as an entry.
_SOLARIS_EXTENDED = ord("X")
_NO_DATA_TYPES = frozenset(b"123456")  # their size field is not followed by data
_VOLUME_LABEL, _GNU_SPARSE = ord("V"), ord("S")
_GLOBAL_PAX = ord("g")
_FILE_TYPES = frozenset(b"07S\x00")
# File-type bits in the mode field (some writers keep them): a socket, device or FIFO in disguise.
_REFUSED_MODES = {0o140000: "socket", 0o020000: "character device", 0o060000: "block device"}
_REFUSED_MODES[0o010000] = "FIFO"


class ArchiveInspector:
    """Reads a gzip-compressed tar stream fed in pieces; raises ``ArchiveInvalid`` on a problem.

    Not thread-safe: feed it from one thread at a time (``ArchiveCheck`` does)."""

    def __init__(self, max_inflated_bytes: int, max_entries: int) -> None:
        self._max_inflated = max_inflated_bytes
        self._max_entries = max_entries
        self._gunzip = Gunzip()
        self.inflated_size = 0
        self.entries = 0
        self.files = 0
        self._root: bytes | None = None
        self._rootless = False  # an entry sits outside any single top-level directory
        self._skip = 0  # data and padding still to pass over
        self._partial = bytearray()  # a header split across two inflated pieces
        self._ended = False  # the first zero block was seen: only zeros may follow
        self._headers = 0
        self._last_name = b""
        self._meta_type = 0  # collecting the data of a GNU long name/link or PAX header
        self._meta_left = 0
        self._meta = bytearray()
        self._records = PendingRecords()  # GNU long name/link and PAX records for the next entry
        self._sparse_ext = False  # old GNU sparse: extension headers precede the data
        self._sparse_data = 0
        self._links = LinkTree()

    def feed(self, chunk: bytes) -> None:
        for out in self._gunzip.inflate(chunk):
            self.inflated_size += len(out)
            if self.inflated_size > self._max_inflated:
                raise ArchiveInvalid(
                    f"more than {self._max_inflated} bytes once inflated "
                    "(sources.max_inflated_bytes)"
                )
            self._read(out)

    def finish(self) -> ArchiveFacts:
        """Check the stream ended where an archive may end; return what was found."""
        self._gunzip.finish()
        if self._headers == 0 and not self._ended:
            raise ArchiveInvalid("not a tar archive (no header)")
        if self._skip or self._meta_left or self._sparse_ext or self._meta_type:
            raise ArchiveInvalid(f"tar archive cut short in entry {show(self._last_name)}")
        if self._partial and (self._partial.count(0) != len(self._partial) or not self._ended):
            raise ArchiveInvalid(f"tar archive cut short after entry {show(self._last_name)}")
        self._links.check()
        return self.facts()

    def facts(self, problem: str | None = None) -> ArchiveFacts:
        root = None
        if self._root is not None and not self._rootless:
            root = self._root.decode("utf-8", "replace") + "/"
        return ArchiveFacts(self.entries, self.files, self.inflated_size, root, problem)

    def _read(self, buf: bytes) -> None:
        pos, end = 0, len(buf)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
            elif self._ended:
                if buf.count(0, pos) != end - pos:
                    raise ArchiveInvalid("data after the end of the tar archive")
                return
            elif self._meta_left:
                step = min(self._meta_left, end - pos)
                self._meta += buf[pos : pos + step]
                self._meta_left -= step
                pos += step
                if not self._meta_left:
                    self._meta_done()
            elif self._partial:
                step = BLOCK - len(self._partial)
                self._partial += buf[pos : pos + step]
                pos += step
                if len(self._partial) == BLOCK:
                    block = bytes(self._partial)
                    self._partial.clear()
                    self._header(block)
            elif end - pos >= BLOCK:
                self._header(buf[pos : pos + BLOCK])
                pos += BLOCK
            else:
                self._partial += buf[pos:]
                return

    def _header(self, block: bytes) -> None:
        if self._sparse_ext:  # an old GNU sparse extension block: a map, no checksum
            self._sparse_ext = block[504] != 0
            if not self._sparse_ext:
                self._skip = -self._sparse_data % BLOCK + self._sparse_data
            return
        if block == ZERO_BLOCK:
            self._ended = True
            return
        self._headers += 1
        try:
            stored = number(block[148:156])
        except ValueError:
            stored = -1
        if stored != checksum(block) and stored != signed_checksum(block):
            if self._headers == 1:
                raise ArchiveInvalid("not a tar archive (bad header checksum)")
            raise ArchiveInvalid(f"corrupt tar header after entry {show(self._last_name)}")
        kind = block[156]
        try:
            size = number(block[124:136])
        except ValueError:
            raise ArchiveInvalid(f"bad size field after entry {show(self._last_name)}") from None
        if kind in _META_TYPES:
            self._meta_start(kind, size)
            return
        if kind == _SOLARIS_EXTENDED:
            raise ArchiveInvalid(f"Solaris extended header after entry {show(self._last_name)}")
        records = self._records
        if records.seen:
            size = records.size(size, self._last_name)
        self._entry(kind, block, size)
        if records.seen:
            records.clear()
        if kind in _NO_DATA_TYPES:
            return
        if kind == _GNU_SPARSE and block[482]:
            self._sparse_ext, self._sparse_data = True, size
            return
        self._skip = -size % BLOCK + size

    def _meta_start(self, kind: int, size: int) -> None:
        limit = MAX_META_BYTES if kind in b"xg" else MAX_LONG_BYTES
        if size > limit:
            raise ArchiveInvalid(
                f"extended header of {size} bytes (more than {limit}) "
                f"after entry {show(self._last_name)}"
            )
        self._meta_type, self._meta_left = kind, size
        self._meta.clear()
        if not size:
            self._meta_done()

    def _meta_done(self) -> None:
        data = bytes(self._meta)
        self._meta.clear()
        kind, self._meta_type = self._meta_type, 0
        self._skip = -len(data) % BLOCK
        if kind == _GLOBAL_PAX:  # nothing of it is kept: it may not name, link or size entries
            self._records.check_global(data)
        else:
            self._records.add(kind, data, self._last_name)

    def _entry(self, kind: int, block: bytes, size: int) -> None:
        names = self._records.names(kind, block)
        name = names[0]
        self._last_name = name
        if kind != _VOLUME_LABEL:  # names the tape for GNU tar (tarfile writes it as a file)
            self.entries += 1
            if self.entries > self._max_entries:
                raise ArchiveInvalid(f"more than {self._max_entries} entries (sources.max_entries)")
        for each in names:
            self._check_name(each)
        if kind == _VOLUME_LABEL:
            return
        if size and kind in _NO_DATA_TYPES:  # GNU tar skips data there, the others read headers
            raise ArchiveInvalid(f"entry {show(name)} of type {chr(kind)} has a size ({size})")
        if kind in _FILE_TYPES:
            self.files += 1
        elif kind in _REFUSED_TYPES:
            raise ArchiveInvalid(f"entry {show(name)} is a {_REFUSED_TYPES[kind]}")
        elif kind in (_SYMLINK, _HARDLINK):
            if len(names) > 1:
                raise ArchiveInvalid(f"link {show(name)} has two names ({show(names[1])})")
            self._check_link(kind, name, self._records.target(block))
        # Most writers leave the type bits out ("0000644"): parse the field only if they may be in.
        bits = 0 if block[100:104] == b"0000" else mode_type(block[100:108])
        if bits in _REFUSED_MODES:
            raise ArchiveInvalid(f"entry {show(name)} is a {_REFUSED_MODES[bits]}")
        self._track_root(kind, name)

    def _check_name(self, name: bytes) -> None:
        if not name:
            raise ArchiveInvalid(f"an entry without a name after {show(self._last_name)}")
        if len(name) > MAX_NAME_BYTES:
            raise ArchiveInvalid(f"entry {show(name)}: name longer than {MAX_NAME_BYTES} bytes")
        if CONTROL.search(name):
            raise ArchiveInvalid(f"entry {show(name)}: name contains a control character")
        if name.startswith(b"/"):
            raise ArchiveInvalid(f"entry {show(name)}: absolute name")
        if b".." in name and b".." in parts(name):
            raise ArchiveInvalid(f"entry {show(name)}: name has a '..' component")

    def _check_link(self, kind: int, name: bytes, target: bytes) -> None:
        if b"\0" in target:
            raise ArchiveInvalid(f"link {show(name)}: target contains NUL")
        if len(target) > MAX_NAME_BYTES:
            raise ArchiveInvalid(f"link {show(name)}: target longer than {MAX_NAME_BYTES} bytes")
        if kind == _HARDLINK:  # names another entry of the archive
            if target.startswith(b"/") or b".." in parts(target):
                raise ArchiveInvalid(f"hard link {show(name)} -> {show(target)} leaves the root")
            return
        name_parts = parts(name)
        if not name_parts:
            raise ArchiveInvalid(f"symbolic link {show(name)} would replace the root")
        if climbs_out(name_parts, target):
            raise ArchiveInvalid(f"symbolic link {show(name)} -> {show(target)} leaves the root")
        self._links.add(name_parts, target)  # to follow links through links at the end

    def _track_root(self, kind: int, name: bytes) -> None:
        if self._rootless:
            return
        while name.startswith(b"./"):
            name = name[2:]
        top, _, rest = name.partition(b"/")
        if top in (b"", b"."):  # "./" itself says nothing about the layout
            return
        if not rest and kind != _DIR:
            self._rootless = True
        elif self._root is None:
            self._root = top
        elif self._root != top:
            self._rootless = True
