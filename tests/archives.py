"""Archives built in the test: good and hostile tar.gz bodies for the archive check."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from isal.isal_zlib import crc32_combine


@dataclass
class Entry:
    """One tar member: a file (``data``), a directory, a link (``target``) or another type."""

    name: str
    kind: bytes = tarfile.REGTYPE
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    pax: dict[str, str] = field(default_factory=dict)


def file(name: str, data: bytes = b"hello\n") -> Entry:
    return Entry(name, data=data)


def directory(name: str) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=0o755)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, target=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, target=target)


def tar(entries: Iterable[Entry], fmt: int = tarfile.PAX_FORMAT, **options: object) -> bytes:
    """An uncompressed tar of ``entries``, names written exactly as given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, **options) as archive:  # type: ignore[call-overload]
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.kind
            info.mode = entry.mode
            info.mtime = 1_700_000_000
            info.linkname = entry.target
            info.pax_headers = dict(entry.pax)
            if entry.kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
            else:
                archive.addfile(info)
    return out.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def tgz(entries: Iterable[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    return gz(tar(entries, fmt))


def app(root: str = "app-1.2/") -> list[Entry]:
    """A small source tree under one top-level directory."""
    return [
        directory(root.rstrip("/")),
        file(root + "README.md", b"# app\n" * 50),
        directory(root + "src"),
        file(root + "src/main.py", b"print('hello')\n" * 300),
        symlink(root + "src/readme", "../README.md"),
    ]


def with_header_field(data: bytes, index: int, offset: int, value: bytes) -> bytes:
    """``data`` (a tar) with bytes at ``offset`` of its ``index``-th 512-byte record replaced,
    the header checksum fixed again."""
    tar_bytes = bytearray(data)
    start = index * 512
    tar_bytes[start + offset : start + offset + len(value)] = value
    header = tar_bytes[start : start + 512]
    header[148:156] = b" " * 8
    tar_bytes[start + 148 : start + 156] = b"%06o\0 " % sum(header)
    return bytes(tar_bytes)


def gzip_members(data: bytes, *cuts: int) -> bytes:
    """``data`` gzipped as several members split at ``cuts``, as ``gzip -c a b`` writes."""
    bounds = [0, *cuts, len(data)]
    return b"".join(gz(data[a:b]) for a, b in itertools.pairwise(bounds))


def bomb(inflated: int) -> bytes:
    """A gzip of ``inflated`` zero bytes (a tar of one huge file would be the same to inflate)."""
    header = tar([file("big", b"")])[:512]
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = [compressor.compress(header)]
    zeros = bytes(1024 * 1024)
    left = inflated
    while left > 0:
        chunks.append(compressor.compress(zeros[: min(left, len(zeros))]))
        left -= len(zeros)
    chunks.append(compressor.flush())
    return b"".join(chunks)


def build_tree(root: Path) -> None:
    """A directory with nested dirs, long names, links (to files and dirs) and an empty dir."""
    long_dir = root / ("d" * 120) / ("e" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 150 + ".txt")).write_text("long\n")
    (root / "src" / "pkg" / "sub").mkdir(parents=True)
    (root / "src" / "pkg" / "__init__.py").write_text("x = 1\n" * 1000)
    (root / "src" / "pkg" / "sub" / "mod.py").write_bytes(os.urandom(20000))
    (root / "empty").mkdir()
    os.symlink("../__init__.py", root / "src" / "pkg" / "sub" / "init_link.py")
    os.symlink("src/pkg", root / "pkg_link")
    os.symlink("d" * 120 + "/" + "e" * 120, root / "long_link")
    os.link(root / "src" / "pkg" / "__init__.py", root / "hard.py")


def zeros_and_noise(zeros_mib: int, noise_mib: int, root: str = "big/") -> bytes:
    """A tar.gz of a file of ``zeros_mib`` MiB of zeros and one of ``noise_mib`` MiB of random
    bytes, built without compressing the zeros more than once: deflate segments ended by a full
    flush start afresh, so one compressed MiB of zeros is repeated as it is."""
    mib = 1024 * 1024
    zeros_header = tar([Entry(root + "zeros", data=b"")])[:512]
    zeros_header = with_header_field(zeros_header, 0, 124, b"%011o\0" % (zeros_mib * mib))
    noise = os.urandom(noise_mib * mib)
    noise_tar = tar([Entry(root + "noise", data=noise)])
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(zeros_header) + deflate.flush(zlib.Z_FULL_FLUSH)
    one_mib = deflate.compress(bytes(mib)) + deflate.flush(zlib.Z_FULL_FLUSH)
    stored = zlib.compressobj(0, zlib.DEFLATED, -15)
    tail = stored.compress(noise_tar) + stored.flush()
    crc = zlib.crc32(zeros_header)
    zero_crc = zlib.crc32(bytes(mib))
    for _ in range(zeros_mib):
        crc = crc32_combine(crc, zero_crc, mib)
    crc = zlib.crc32(noise_tar, crc)
    size = 512 + zeros_mib * mib + len(noise_tar)
    trailer = crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return b"".join([gzip_header, head, one_mib * zeros_mib, tail, trailer])


# Raw tar members, field by field, for forms tarfile does not write (GNU magic with a prefix,
# two name records, lenient numbers...). ``raw_tar(*members)`` joins them and ends the archive.
MAGICS = {"posix": b"ustar\x0000", "gnu": b"ustar  \x00", "v7": b""}


def raw_header(
    name: bytes,
    kind: bytes = b"0",
    size: int | bytes = 0,
    link: bytes = b"",
    *,
    magic: str = "posix",
    prefix: bytes = b"",
    trailer: bytes = b"",
) -> bytes:
    """One 512-byte header with its checksum; ``size`` bytes are written as they are."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:124] = b"0000000\0" * 2
    block[124:136] = size if isinstance(size, bytes) else b"%011o\0" % size
    block[136:148] = b"%011o\0" % 1_700_000_000
    block[156:157] = kind
    block[157 : 157 + len(link)] = link
    block[257 : 257 + len(MAGICS[magic])] = MAGICS[magic]
    block[345 : 345 + len(prefix)] = prefix
    block[512 - len(trailer) :] = trailer
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def raw_member(name: bytes, data: bytes = b"", kind: bytes = b"0", **fields: object) -> bytes:
    """A header and its data: a file, or (``kind``, ``link=``) any other type."""
    size = fields.pop("size", len(data))
    return raw_header(name, kind, size, **fields) + padded(data)  # type: ignore[arg-type]


def pax_data(records: list[tuple[bytes, bytes]]) -> bytes:
    out = b""
    for key, value in records:
        body = b" " + key + b"=" + value + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length += 1
        out += str(length).encode() + body
    return out


def pax_member(records: list[tuple[bytes, bytes]], kind: bytes = b"x") -> bytes:
    """A PAX extended header (``x`` local, ``g`` global) holding ``records`` in order."""
    data = pax_data(records)
    return raw_header(b"././@PaxHeader", kind, len(data)) + padded(data)


def long_member(value: bytes, kind: bytes = b"L") -> bytes:
    """A GNU long name (``L``) or long link (``K``) record for the next entry."""
    data = value + b"\0"
    return raw_header(b"././@LongLink", kind, len(data), magic="gnu") + padded(data)


def raw_tar(*members: bytes) -> bytes:
    return b"".join(members) + bytes(1024)
