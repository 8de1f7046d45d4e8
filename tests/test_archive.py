"""The streaming archive check on its own: every archive real tools make passes, every broken or
hostile one is refused with a reason naming the entry, whatever the chunk boundaries."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.client.packing import pack_directory
from gateway.errors import ArchiveInvalid
from gateway.server.domain.archive.check import ArchiveCheck
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.archive.format import OUT_CHUNK
from gateway.server.domain.archive.inspector import ArchiveInspector

from .archives import (
    Entry,
    app,
    bomb,
    build_tree,
    directory,
    file,
    gz,
    gzip_members,
    hardlink,
    symlink,
    tar,
    tgz,
    with_header_field,
)

CHUNK_SIZES = [1 << 20, 4096, 511, 1]
BIG = 1 << 40


def inspect(data: bytes, chunk: int = 1 << 20, **limits: int) -> ArchiveFacts:
    inspector = ArchiveInspector(limits.get("max_inflated", BIG), limits.get("max_entries", BIG))
    for start in range(0, len(data), chunk):
        inspector.feed(data[start : start + chunk])
    return inspector.finish()


def refusal(data: bytes, chunk: int = 1 << 20, **limits: int) -> str:
    with pytest.raises(ArchiveInvalid) as caught:
        inspect(data, chunk, **limits)
    assert caught.value.status == 422 and caught.value.code == "archive_invalid"
    return caught.value.reason


def inflated_length(data: bytes) -> int:
    """What stdlib zlib inflates from ``data``: every gzip member, zero padding ignored."""
    total = 0
    while data.strip(b"\0"):
        inflater = zlib.decompressobj(31)
        total += len(inflater.decompress(data))
        data = inflater.unused_data
    return total


def long_name(depth: int = 3) -> str:
    return "/".join(["x" * 90] * depth) + "/" + "y" * 120 + ".py"


def app_tar(**kwargs: object) -> bytes:
    return tar(app(), **kwargs)  # type: ignore[arg-type]


ACCEPTED: list[tuple[str, Callable[[], bytes], dict[str, object]]] = [
    ("pax", lambda: tgz(app()), {"entries": 5, "files": 2, "root": "app-1.2/"}),
    ("ustar", lambda: tgz(app(), tarfile.USTAR_FORMAT), {"entries": 5, "root": "app-1.2/"}),
    ("gnu", lambda: tgz(app(), tarfile.GNU_FORMAT), {"entries": 5, "root": "app-1.2/"}),
    (
        "gnu long names and links",
        lambda: tgz(
            [file(long_name()), symlink("a/" + "l" * 150, "../" + long_name())],
            tarfile.GNU_FORMAT,
        ),
        {"entries": 2, "files": 1, "root": None},
    ),
    (
        "pax long and non-ascii names",
        lambda: tgz([file("r/" + long_name()), file("r/ünïcödé-名前.txt"), directory("r")]),
        {"entries": 3, "files": 2, "root": "r/"},
    ),
    (
        "ustar prefix field",
        lambda: tgz([file("p" * 120 + "/name.txt")], tarfile.USTAR_FORMAT),
        {"entries": 1, "root": "p" * 120 + "/"},
    ),
    (
        "pax global header",
        lambda: gz(tar(app(), pax_headers={"comment": "made by hand"})),
        {"entries": 5, "root": "app-1.2/"},
    ),
    (
        "pax size record",
        lambda: tgz([Entry("a/f", data=b"12345", pax={"size": "5"}), file("a/g")]),
        {"entries": 2, "files": 2},
    ),
    ("top level entries", lambda: tgz([file("a.py"), file("b.py")]), {"root": None}),
    (
        "dot slash names",
        lambda: tgz([directory("."), file("./r/a"), file("./r/b")]),
        {"root": "r/"},
    ),
    ("dot slash top level", lambda: tgz([directory("./"), file("./a")]), {"root": None}),
    ("root dir without its entry", lambda: tgz([file("r/a"), file("r/b/c")]), {"root": "r/"}),
    ("two top dirs", lambda: tgz([file("r/a"), file("s/b")]), {"root": None}),
    ("one file only", lambda: tgz([file("r")]), {"root": None, "files": 1}),
    ("empty archive", lambda: gz(bytes(1024)), {"entries": 0, "root": None}),
    ("zero padding of any length", lambda: gz(app_tar() + bytes(100_000)), {"entries": 5}),
    ("lone zero block at the end", lambda: gz(tar([file("a")])[:1024] + bytes(512)), {}),
    ("no end of archive blocks", lambda: gz(tar([file("a")])[:1024]), {"entries": 1}),
    ("gzip members split mid header", lambda: gzip_members(app_tar(), 700, 1555), {"entries": 5}),
    ("gzip member per byte run", lambda: gzip_members(app_tar(), *range(1, 3000, 97)), {}),
    ("zero bytes after the gzip stream", lambda: tgz(app()) + bytes(4000), {"entries": 5}),
    (
        "links inside",
        lambda: tgz(
            [
                directory("r/d/e"),
                symlink("r/d/e/up", "../../x"),
                symlink("r/d/here", "."),
                symlink("r/d/chain", "here/e/up"),
                symlink("r/d/sideways", "e/../e"),
                hardlink("r/hard", "r/d/e/file"),
                file("r/d/e/file"),
            ]
        ),
        {"entries": 7, "files": 1, "root": "r/"},
    ),
    ("link loop", lambda: tgz([symlink("a", "b"), symlink("b", "a")]), {"entries": 2}),
    (
        "mode with regular file type bits",
        lambda: gz(with_header_field(tar([file("a")]), 0, 100, b"0100644\0")),
        {"files": 1},
    ),
]


@pytest.mark.parametrize("chunk", CHUNK_SIZES)
@pytest.mark.parametrize(
    ("build", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_accepted(build: Callable[[], bytes], expected: dict[str, object], chunk: int) -> None:
    data = build()
    facts = inspect(data, chunk)
    found = facts.as_json()
    assert {k: found[k] for k in expected} == expected
    assert facts.inflated_size == inflated_length(data)
    assert facts.problem is None


def device(name: str, kind: bytes) -> Entry:
    return Entry(name, kind)


REFUSED: list[tuple[str, Callable[[], bytes], str]] = [
    ("text", lambda: b"hello, this is not an archive\n" * 10, "not gzip"),
    ("empty body", lambda: b"", "not gzip (empty body)"),
    ("zip", lambda: b"PK\x03\x04" + bytes(100), "not gzip"),
    (
        "bad crc",
        lambda: (lambda d: d[:-8] + bytes([d[-8] ^ 1]) + d[-7:])(tgz(app())),
        "corrupt gzip",
    ),
    (
        "bad length",
        lambda: (lambda d: d[:-4] + bytes([d[-4] ^ 1]) + d[-3:])(tgz(app())),
        "corrupt gzip",
    ),
    (
        "corrupt deflate data",
        lambda: (lambda d: d[:20] + b"\xff" * 40 + d[60:])(tgz(app())),
        "corrupt gzip",
    ),
    ("truncated gzip", lambda: tgz(app())[:-10], "gzip stream cut short"),
    ("truncated gzip header", lambda: tgz(app())[:5], "gzip stream cut short"),
    ("garbage after gzip", lambda: tgz(app()) + b"trailing junk", "data after the end of the gzip"),
    (
        "zeros then garbage after gzip",
        lambda: tgz(app()) + bytes(10) + b"x",
        "after the end of the gzip",
    ),
    ("gzip of text", lambda: gz(b"just some text\n" * 100), "not a tar archive"),
    ("gzip of nothing", lambda: gz(b""), "not a tar archive"),
    (
        "truncated tar in data",
        lambda: gz(app_tar()[:1200]),
        "cut short in entry 'app-1.2/README.md'",
    ),
    ("truncated tar in header", lambda: gz(app_tar()[:1800]), "cut short after entry"),
    ("garbage after the end", lambda: gz(app_tar() + b"more"), "data after the end of the tar"),
    (
        "data after a lone zero block",
        lambda: gz(tar([file("a")])[:1024] + bytes(512) + tar([file("b")])),
        "data after the end of the tar",
    ),
    (
        "bad checksum mid archive",
        lambda: gz(with_header_field(app_tar(), 0, 0, b"x")[:1536] + b"\xff" + app_tar()[1537:]),
        "corrupt tar header after entry",
    ),
    ("absolute name", lambda: tgz([file("/etc/cron.d/x")]), "entry '/etc/cron.d/x': absolute name"),
    ("dot dot", lambda: tgz([file("a/../../etc/x")]), "entry 'a/../../etc/x': name has a '..'"),
    ("dot dot alone", lambda: tgz([file("..")]), "'..'"),
    ("newline in name", lambda: tgz([file("a\nb")]), "entry 'a\\nb': name contains a control"),
    ("escape char in name", lambda: tgz([file("a\x1b[2Jb")]), "control character"),
    ("nul in pax path", lambda: tgz([Entry("a", pax={"path": "a\x00b"})]), "control character"),
    (
        "nul in gnu long name",
        lambda: tgz([file("n" * 101 + "\x00tail")], tarfile.GNU_FORMAT),
        "control character",
    ),
    (
        "absolute symlink",
        lambda: tgz([symlink("r/l", "/etc/passwd")]),
        "symbolic link 'r/l' -> '/etc/passwd'",
    ),
    ("symlink climbing out", lambda: tgz([symlink("r/l", "../../x")]), "leaves the root"),
    ("symlink to parent of root", lambda: tgz([symlink("l", "..")]), "leaves the root"),
    (
        "symlink through a symlink",
        lambda: tgz([symlink("r/here", "."), symlink("r/esc", "here/../../x")]),
        "leaves the root through links",
    ),
    (
        "symlink in a linked directory",
        lambda: tgz([directory("d"), symlink("d/s", ".."), symlink("d/s/l", "../y")]),
        "symbolic link 'd/s/l' is inside symbolic link 'd/s'",
    ),
    (
        "symlink defined after its use",
        lambda: tgz([symlink("a", "b/../x"), symlink("b", ".")]),
        "leaves the root through links",
    ),
    ("hard link out", lambda: tgz([hardlink("r/h", "../etc/passwd")]), "hard link 'r/h'"),
    ("absolute hard link", lambda: tgz([hardlink("h", "/etc/shadow")]), "leaves the root"),
    (
        "character device",
        lambda: tgz([device("r/tty", tarfile.CHRTYPE)]),
        "'r/tty' is a character device",
    ),
    ("block device", lambda: tgz([device("sda", tarfile.BLKTYPE)]), "is a block device"),
    ("fifo", lambda: tgz([device("pipe", tarfile.FIFOTYPE)]), "'pipe' is a FIFO"),
    (
        "socket in mode bits",
        lambda: gz(with_header_field(tar([file("s")]), 0, 100, b"0140755\0")),
        "'s' is a socket",
    ),
    (
        "malformed pax",
        lambda: gz(with_header_field(tar([Entry("a", pax={"comment": "abc"})]), 1, 0, b"99 x")),
        "malformed PAX",
    ),
    (
        "huge extended header",
        lambda: gz(
            with_header_field(tar([Entry("a", pax={"c": "x"})]), 0, 124, b"%011o\0" % (2 << 20))
        ),
        "extended header",
    ),
    ("empty name", lambda: tgz([file("")]), "an entry without a name"),
]


@pytest.mark.parametrize("chunk", CHUNK_SIZES)
@pytest.mark.parametrize(("build", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused(build: Callable[[], bytes], reason: str, chunk: int) -> None:
    assert reason in refusal(build(), chunk)


def test_a_bomb_is_cut_when_it_passes_the_limit() -> None:
    limit = 8 * 1024 * 1024
    inspector = ArchiveInspector(limit, BIG)
    data = bomb(64 * 1024 * 1024)
    with pytest.raises(ArchiveInvalid, match="max_inflated_bytes"):
        for start in range(0, len(data), 4096):
            inspector.feed(data[start : start + 4096])
    assert limit < inspector.inflated_size <= limit + OUT_CHUNK


def test_inflated_size_at_the_limit_passes() -> None:
    data = tgz(app())
    size = inspect(data).inflated_size
    assert inspect(data, max_inflated=size).inflated_size == size
    assert "max_inflated_bytes" in refusal(data, max_inflated=size - 1)


def test_entries_limit() -> None:
    data = tgz([file(f"r/{i}") for i in range(10)])
    assert inspect(data, max_entries=10).entries == 10
    assert "more than 9 entries" in refusal(data, max_entries=9)


def test_signed_header_checksums_of_old_writers_are_accepted() -> None:
    data = tar([file("é")], tarfile.USTAR_FORMAT)  # a byte >= 0x80 in the name
    header = bytearray(data[:512])
    header[148:156] = b" " * 8
    signed = sum(b - 256 if b >= 128 else b for b in header)
    assert signed != sum(header)
    data = data[:148] + b"%06o\0 " % signed + data[156:]
    assert inspect(gz(data)).files == 1


GNU_TAR = shutil.which("tar")


@pytest.mark.skipif(GNU_TAR is None, reason="tar is not installed")
@pytest.mark.parametrize("fmt", ["gnu", "posix", "oldgnu"])
def test_gnu_tar_output_passes(tmp_path: Path, fmt: str) -> None:
    tree = tmp_path / "project-1.0"
    build_tree(tree)
    sparse = tree / "sparse.bin"
    with sparse.open("wb") as out:  # many holes: old GNU sparse headers need extension blocks
        for i in range(12):
            out.seek(i * 65536)
            out.write(b"data")
    out_path = tmp_path / "a.tar.gz"
    subprocess.run(
        [
            GNU_TAR,
            f"--format={fmt}",
            "--sparse",
            "-czf",
            str(out_path),
            "-C",
            str(tmp_path),
            "project-1.0",
        ],
        check=True,
    )
    facts = inspect(out_path.read_bytes(), 4096)
    listed = subprocess.run([GNU_TAR, "-tzf", str(out_path)], check=True, capture_output=True)
    assert facts.entries == len(listed.stdout.splitlines())
    assert facts.root == "project-1.0/"


@pytest.mark.skipif(GNU_TAR is None, reason="tar is not installed")
def test_gnu_tar_of_dot_and_gzip_of_two_files(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    build_tree(tree)
    tar_path = tmp_path / "a.tar"
    subprocess.run([GNU_TAR, "-cf", str(tar_path), "-C", str(tree), "."], check=True)
    raw = tar_path.read_bytes()
    (tmp_path / "p1").write_bytes(raw[:3000])
    (tmp_path / "p2").write_bytes(raw[3000:])
    joined = subprocess.run(
        ["gzip", "-c", str(tmp_path / "p1"), str(tmp_path / "p2")], check=True, capture_output=True
    ).stdout
    facts = inspect(joined, 1000)
    assert facts.root is None
    assert facts.inflated_size == len(raw)  # GNU tar pads to its 10 KiB record


def test_the_clients_packer_always_passes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    build_tree(tree)
    out = tmp_path / "packed.tar.gz"
    with out.open("wb") as stream:
        result = pack_directory(tree, stream)
    facts = inspect(out.read_bytes(), 777)
    assert facts.files == result.files + 0 and facts.entries > result.files
    assert facts.root is None


def test_a_real_installed_tree_passes(tmp_path: Path) -> None:
    source = Path(tarfile.__file__).parent / "json"  # a stdlib package: real files, real names
    out = tmp_path / "json.tar.gz"
    with tarfile.open(out, "w:gz") as archive:
        archive.add(source, arcname="json")
    facts = inspect(out.read_bytes())
    assert facts.root == "json/" and facts.files >= 4
    assert not os.path.isabs(facts.root)


async def feed_all(check: ArchiveCheck, data: bytes, chunk: int = 1000) -> ArchiveFacts:
    for start in range(0, len(data), chunk):
        await check.feed(data[start : start + chunk])
    return await check.finish()


async def test_check_in_enforce_mode_raises_at_the_next_batch() -> None:
    check = ArchiveCheck("enforce", BIG, BIG, batch=4096)
    data = gz(os.urandom(100_000))  # not a tar, and incompressible: many batches
    with pytest.raises(ArchiveInvalid, match="not a tar archive"):
        for start in range(0, len(data), 1000):
            await check.feed(data[start : start + 1000])
    assert start < len(data) - 1000  # refused before the end of the body


@pytest.mark.parametrize("batch", [1, 4096, 1 << 20])
async def test_check_gives_the_same_facts_whatever_the_batch(batch: int) -> None:
    data = tgz(app())
    facts = await feed_all(ArchiveCheck("enforce", BIG, BIG, batch=batch), data)
    assert facts == inspect(data)


async def test_report_mode_keeps_what_it_found_and_why_it_would_refuse() -> None:
    data = tgz([file("r/a"), file("r/b"), file("/etc/passwd"), file("r/c")])
    facts = await feed_all(ArchiveCheck("report", BIG, BIG, batch=1), data, 100)
    assert facts.problem == "entry '/etc/passwd': absolute name"
    assert facts.as_json()["problem"] == facts.problem
    assert facts.entries == 3  # counted up to the problem, then the check stopped


async def test_report_mode_on_a_good_archive_has_no_problem() -> None:
    facts = await feed_all(ArchiveCheck("report", BIG, BIG), tgz(app()))
    assert facts.problem is None and "problem" not in facts.as_json()


async def test_report_mode_judges_the_end_too() -> None:
    facts = await feed_all(ArchiveCheck("report", BIG, BIG), tgz(app())[:-20])
    assert facts.problem == "gzip stream cut short (truncated)"


async def test_closing_a_check_with_a_batch_in_flight_leaves_nothing_behind() -> None:
    check = ArchiveCheck("enforce", BIG, BIG, batch=1)
    await check.feed(b"definitely not gzip")  # its batch fails in the worker thread
    check.close()
    await asyncio.sleep(0.05)  # the failure is collected, not reported as never retrieved
