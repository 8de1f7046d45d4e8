"""Packing a directory into a ``tar.gz`` archive for ``gateway deploy``.

What goes in:
- every regular file and directory under the root, at the archive's top level (no leading
  directory), in sorted order;
- minus what the exclude files list, as git reads them: in every directory, ``.gatewayignore`` if
  present, else ``.gitignore`` (gitignore syntax, patterns relative to that directory; a deeper
  file's match wins over a shallower one's, and a file inside an excluded directory stays out);
- the ``.git`` directory never;
- symbolic links as links (never followed) when they stay inside the root: a relative target that
  resolves, link by link, to a path inside the root. Other links (absolute, or leading out of the
  root) are skipped with a warning, as are sockets, FIFOs and devices. A dangling link (its target
  does not exist) is refused, naming it: the build would fail on it later, further from the cause.

``scan`` lists what would be packed without packing it (``gateway deploy --dry-run``).
Owners are written as 0/0 without names: the archive carries no user names of the packing machine.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pathspec

# Looked for in each directory, first match wins: a project can exclude more (or less) from
# deploys than from git by adding its own .gatewayignore.
IGNORE_FILES = (".gatewayignore", ".gitignore")
# Never deployed: the platform builds from the archive's files, history only makes it bigger.
ALWAYS_EXCLUDED = frozenset({".git"})
# Read size when copying files into the archive: large enough for throughput, small for memory.
COPY_CHUNK = 1024 * 1024
# gzip level 6 is gzip's own default: most of level 9's ratio at a fraction of its CPU time.
COMPRESS_LEVEL = 6


class PackError(Exception):
    """The directory cannot be packed; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One thing to pack: where it is, its name in the archive and its ``lstat``."""

    path: Path
    name: str
    stat: os.stat_result

    @property
    def size(self) -> int:
        """Bytes it adds before compression: a regular file's size, else 0."""
        return self.stat.st_size if stat.S_ISREG(self.stat.st_mode) else 0


@dataclass
class PackResult:
    """What was (or would be) packed: counts for the user, the exclude files read (archive
    names), the paths skipped with the reason for each, and the entries themselves."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes: int = 0
    ignore_files: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    @property
    def ignore_file(self) -> str | None:
        """The root's exclude file, if one was read."""
        return next((name for name in self.ignore_files if "/" not in name), None)


# (directory prefix in the archive, its patterns): the chain from the root down to a directory.
Rules = tuple[tuple[str, pathspec.GitIgnoreSpec], ...]


def load_ignore(directory: Path, root: Path) -> tuple[pathspec.GitIgnoreSpec | None, str | None]:
    """The exclude patterns of ``directory`` and the name of the file they came from."""
    for name in IGNORE_FILES:
        path = directory / name
        if path.is_symlink() and not symlink_stays_inside(path, root):
            continue  # read nothing from outside the directory, not even patterns
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace") as lines:
                return pathspec.GitIgnoreSpec.from_lines(lines), name
    return None, None


def _excluded(rules: Rules, name: str, is_dir: bool) -> bool:
    """Whether ``name`` is excluded: the deepest exclude file with a matching pattern decides."""
    for prefix, spec in reversed(rules):
        relative = name[len(prefix) :]
        result = spec.check_file(f"{relative}/" if is_dir else relative)
        if result.include is not None:
            return bool(result.include)
    return False


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def symlink_stays_inside(link: Path, root: Path) -> bool:
    """Whether the link at ``link`` is relative and resolves to a path inside ``root``.

    Both the link text (once normalised) and the real path (every link on the way resolved, as the
    archive will be when unpacked) must stay inside: ``d -> .`` followed by ``x -> d/d/../..``
    looks inside on paper and is not."""
    target = os.readlink(link)
    if os.path.isabs(target):
        return False
    real_root = os.path.realpath(root)
    lexical = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(link)), target))
    if not _inside(lexical, os.path.abspath(root)):
        return False
    return _inside(os.path.realpath(link), real_root)


def _walk(root: Path, result: PackResult) -> Iterator[Entry]:
    """Yield everything to pack, depth first, sorted, no links followed. Excluded directories are
    not descended into (as git does); each directory's exclude file applies below it."""
    stack: list[tuple[Path, str, Rules]] = [(root, "", ())]
    while stack:
        directory, prefix, rules = stack.pop()
        spec, ignore_name = load_ignore(directory, root)
        if spec is not None and ignore_name is not None:
            rules = (*rules, (prefix, spec))
            result.ignore_files.append(f"{prefix}{ignore_name}")
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise PackError(f"cannot read directory {directory}: {exc.strerror}") from None
        subdirs: list[tuple[Path, str, Rules]] = []
        for entry in entries:
            name = f"{prefix}{entry.name}"
            if not prefix and entry.name in ALWAYS_EXCLUDED:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the directory was listed: nothing to pack
            is_dir = stat.S_ISDIR(st.st_mode)
            if _excluded(rules, name, is_dir):
                continue
            yield Entry(Path(entry.path), name, st)
            if is_dir:
                subdirs.append((Path(entry.path), f"{name}/", rules))
        # Reversed onto the stack so that directories come out in sorted order.
        stack.extend(reversed(subdirs))


def scan(root: Path, *, on_skip: Callable[[str, str], None] | None = None) -> PackResult:
    """What packing ``root`` would store, counted, without reading a file's content.

    Raises ``PackError`` when ``root`` is not a directory, cannot be read, holds a dangling
    symbolic link, or nothing is left to pack."""
    if not root.is_dir():
        raise PackError(f"{root} is not a directory")
    result = PackResult()

    def skip(name: str, reason: str) -> None:
        result.skipped.append((name, reason))
        if on_skip is not None:
            on_skip(name, reason)

    for entry in _walk(root, result):
        mode = entry.stat.st_mode
        if stat.S_ISDIR(mode):
            result.directories += 1
        elif stat.S_ISLNK(mode):
            target = os.readlink(entry.path)
            if not symlink_stays_inside(entry.path, root):
                skip(entry.name, f"symbolic link to {target} leads out of the directory")
                continue
            if not os.path.exists(entry.path):
                raise PackError(
                    f"{entry.name} is a symbolic link to {target}, which does not exist: remove"
                    " it, or list it in .gitignore or .gatewayignore"
                )
            result.symlinks += 1
        elif stat.S_ISREG(mode):
            result.files += 1
            result.bytes += entry.size
        else:
            skip(entry.name, "not a regular file, directory or symbolic link")
            continue
        result.entries.append(entry)
    if result.files == 0:
        raise PackError(f"nothing to deploy in {root}: no files left after the exclusions")
    return result


def pack_directory(
    root: Path,
    out: BinaryIO,
    *,
    on_skip: Callable[[str, str], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    scanned: PackResult | None = None,
) -> PackResult:
    """Write ``root`` as a gzip-compressed tar to ``out`` (see the module doc for what goes in).

    Files are copied in ``COPY_CHUNK`` pieces: memory does not grow with file sizes.
    ``on_bytes`` is called with each piece's size (it may raise to stop packing); ``scanned``
    is ``scan``'s result when the caller already has it. Raises ``PackError`` as ``scan`` does."""
    result = scanned if scanned is not None else scan(root, on_skip=on_skip)
    # The gzip header's time is left at 0: the same files pack into the same bytes, so an
    # interrupted deploy run again finds its upload (keyed by the archive's sha256).
    with (
        gzip.GzipFile(fileobj=out, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in result.entries:
            mode = entry.stat.st_mode
            info = tarfile.TarInfo(entry.name)
            info.mode = stat.S_IMODE(mode)
            info.mtime = int(entry.stat.st_mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(entry.path)
                tar.addfile(info)
            else:
                _add_file(tar, info, entry, on_bytes)
    return result


class _Counted:
    """A file read through ``on_bytes``: tarfile copies from it in ``COPY_CHUNK`` pieces."""

    def __init__(self, source: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        self._source = source
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._on_bytes(len(data))
        return data


def _add_file(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    entry: Entry,
    on_bytes: Callable[[int], None] | None,
) -> None:
    # Opened without following a link swapped in since the scan: O_NOFOLLOW refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(entry.path, flags)
    except OSError as exc:
        raise PackError(f"cannot read {entry.name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as source:
        # The size is taken from the open file: tarfile copies exactly that many bytes and raises
        # OSError if the file shrank meanwhile (a grown file is cut at the size the header says).
        info.size = os.fstat(source.fileno()).st_size
        readable = source if on_bytes is None else _Counted(source, on_bytes)
        try:
            tar.addfile(info, readable)
        except OSError as exc:
            reason = exc.strerror or "it changed while it was being packed"
            raise PackError(f"cannot pack {entry.name}: {reason}") from None
