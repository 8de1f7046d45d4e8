"""An entry's name, link target and size as every common extractor reads them.

GNU tar, bsdtar (libarchive), Python's ``tarfile`` and Go's ``archive/tar`` agree on plain ustar,
GNU and PAX headers, and disagree on a few forms: which of two name records wins, whether a PAX
*global* header names entries, whether a ``prefix`` field counts outside POSIX magic. The check
refuses those forms outright, so that an accepted entry has one name (and one target) for all of
them; only a PAX ``GNU.sparse.name`` has two readings (GNU sparse files keep a made-up name in the
header for readers that do not know it), and both are judged.
"""

from __future__ import annotations

from ....errors import ArchiveInvalid
from .format import header_names, pax_number, pax_records, show

# The longest name or link target kept: Linux's PATH_MAX, which no extractor can create past.
MAX_NAME_BYTES = 4096
# A GNU long name or link record: the name and its NUL.
MAX_LONG_BYTES = MAX_NAME_BYTES + 1

_PATH, _LINKPATH, _SIZE, _SPARSE_NAME = b"path", b"linkpath", b"size", b"GNU.sparse.name"
# What the check reads from a local PAX header; other records are checked and dropped.
_LOCAL_KEYS = frozenset({_PATH, _LINKPATH, _SIZE, _SPARSE_NAME})
# Records a PAX global header may not hold: Go's archive/tar and libarchive ignore them there,
# GNU tar applies them to every later entry, tarfile to those with a local header of their own.
_GLOBAL_REFUSED = _LOCAL_KEYS | {
    b"GNU.sparse." + key
    for key in (b"size", b"realsize", b"major", b"minor", b"map", b"numblocks", b"offset")
}
_LONG_NAME, _LONG_LINK, _LOCAL_PAX = ord("L"), ord("K"), ord("x")
# PAX records read in one archive, local and global: each costs a few hundred nanoseconds of
# Python, so a header of six-byte records costs about 0.1 s per MiB; writers put a few records
# per entry (times, a long name, extended attributes): ten per entry at sources.max_entries.
MAX_PAX_RECORDS = 2_000_000
_WHAT = {_LONG_NAME: "GNU long names", _LONG_LINK: "GNU long links", _LOCAL_PAX: "PAX headers"}


class PendingRecords:
    """The GNU long name and link and the local PAX records read for the next entry."""

    def __init__(self) -> None:
        self._records_left = MAX_PAX_RECORDS
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._pax: dict[bytes, bytes] = {}
        self.seen: set[int] = set()  # which of L, K, x came for this entry (empty: none)

    def add(self, kind: int, data: bytes, after: bytes) -> None:
        """Take the data of a GNU long name (L) or link (K) or of a local PAX header (x)."""
        if kind in self.seen:  # tarfile takes the first, GNU tar and Go the last
            raise ArchiveInvalid(f"two {_WHAT[kind]} for one entry after {show(after)}")
        self.seen.add(kind)
        if kind == _LOCAL_PAX:
            for key, value in self._parse(data, _LOCAL_KEYS):
                if self._pax.setdefault(key, value) != value:
                    raise ArchiveInvalid(
                        f"PAX header with two different {show(key)} records after {show(after)}"
                    )
            return
        value = data.rstrip(b"\0")  # a NUL inside is kept: the check refuses it
        if kind == _LONG_NAME:
            self._long_name = value
        else:
            self._long_link = value

    def check_global(self, data: bytes) -> None:
        """Refuse a PAX global header that sets a name, a link target or a size; keep nothing."""
        for key, _ in self._parse(data, _GLOBAL_REFUSED)[:1]:
            raise ArchiveInvalid(
                f"PAX global header sets {show(key)} (extractors disagree on what it applies to)"
            )

    def _parse(self, data: bytes, keep: frozenset[bytes]) -> list[tuple[bytes, bytes]]:
        try:
            records, count = pax_records(data, keep, self._records_left)
        except ValueError:
            raise ArchiveInvalid(f"more than {MAX_PAX_RECORDS} PAX records") from None
        self._records_left -= count
        return records

    def clear(self) -> None:
        if self.seen:
            self._long_name = self._long_link = None
            self._pax = {}
            self.seen.clear()

    def names(self, kind: int, block: bytes) -> list[bytes]:
        """The entry's names, the one most extractors use first; more than one only for a GNU
        sparse file's made-up header name. Refuses names extractors read differently."""
        if not self.seen and not block[345]:  # most entries: a name and no prefix, no records
            return [block[:100].split(b"\0", 1)[0]]
        given = [name for name in (self._long_name, self._pax.get(_PATH)) if name is not None]
        if given:
            if given[0] != given[-1]:
                raise ArchiveInvalid(
                    f"entry {show(given[-1])}: its PAX path and its GNU long name "
                    f"{show(given[0])} differ"
                )
            name = given[0]
        else:
            read = header_names(block, kind)
            if len(set(read)) > 1:
                raise ArchiveInvalid(
                    f"entry {show(read[0])}: extractors read its name differently "
                    f"({', '.join(show(n) for n in read[1:])}): a prefix field outside POSIX "
                    "magic or in a star header"
                )
            name = read[0]
        sparse = self._pax.get(_SPARSE_NAME)
        if sparse is None or sparse == name:
            return [name]
        if given:
            raise ArchiveInvalid(
                f"entry {show(sparse)}: its GNU.sparse.name and its path {show(name)} differ"
            )
        return [sparse, name]

    def target(self, block: bytes) -> bytes:
        """The entry's link target: GNU long link or PAX linkpath, else the header's field."""
        given = [t for t in (self._long_link, self._pax.get(_LINKPATH)) if t is not None]
        if not given:
            return block[157:257].split(b"\0", 1)[0]
        if given[0] != given[-1]:
            raise ArchiveInvalid(
                f"link target {show(given[-1])}: its PAX linkpath and its GNU long link "
                f"{show(given[0])} differ"
            )
        return given[0]

    def size(self, header_size: int, after: bytes) -> int:
        """The entry's data size: the PAX ``size`` record (digits only), else the header's."""
        value = self._pax.get(_SIZE) if self._pax else None
        if value is None:
            return header_size
        try:
            return pax_number(value)
        except ValueError:
            raise ArchiveInvalid(f"bad PAX size {show(value)} after {show(after)}") from None
