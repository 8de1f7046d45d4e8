"""Packing a directory into a ``tar.gz`` archive for ``gateway deploy``.

What goes in:
- every regular file and directory under the root, at the archive's top level (no leading
  directory), in sorted order;
- the root's exclude file, when there is one: ``.gatewayignore`` if present, else ``.gitignore``
  (gitignore syntax, read from the root only; nested ``.gitignore`` files are not read);
- the ``.git`` directory never;
- symbolic links as links (never followed) when they stay inside the root: a relative target that
  resolves, link by link, to a path inside the root. Other links (absolute, or leading out of the
  root) are skipped with a warning, as are sockets, FIFOs and devices.

Owners are written as 0/0 without names: the archive carries no user names of the packing machine.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pathspec

# Looked for at the root, first match wins: a project can exclude more (or less) from deploys than
# from git by adding its own .gatewayignore.
IGNORE_FILES = (".gatewayignore", ".gitignore")
# Never deployed: the platform builds from the archive's files, history only makes it bigger.
ALWAYS_EXCLUDED = frozenset({".git"})
# Read size when copying files into the archive: large enough for throughput, small for memory.
COPY_CHUNK = 1024 * 1024
# gzip level 6 is gzip's own default: most of level 9's ratio at a fraction of its CPU time.
COMPRESS_LEVEL = 6


class PackError(Exception):
    """The directory cannot be packed; the message says why."""


@dataclass
class PackResult:
    """What was packed: counts for the user, and the paths skipped with the reason for each."""

    files: int = 0
    directories: int = 0
    symlinks: int = 0
    bytes: int = 0
    ignore_file: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)


def load_ignore(root: Path) -> tuple[pathspec.GitIgnoreSpec, str | None]:
    """The exclude patterns of ``root`` and the name of the file they came from (None: none)."""
    for name in IGNORE_FILES:
        path = root / name
        if path.is_symlink() and not symlink_stays_inside(path, root):
            continue  # read nothing from outside the directory, not even patterns
        if path.is_file():
            with path.open(encoding="utf-8", errors="replace") as lines:
                return pathspec.GitIgnoreSpec.from_lines(lines), name
    return pathspec.GitIgnoreSpec.from_lines([]), None


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


def _walk(root: Path, spec: pathspec.GitIgnoreSpec) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Yield (path, archive name, lstat) for everything to pack, depth first, sorted, no links
    followed. Excluded directories are not descended into (as git does)."""
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise PackError(f"cannot read directory {directory}: {exc.strerror}") from None
        subdirs: list[tuple[Path, str]] = []
        for entry in entries:
            name = f"{prefix}{entry.name}"
            if not prefix and entry.name in ALWAYS_EXCLUDED:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the directory was listed: nothing to pack
            is_dir = stat.S_ISDIR(st.st_mode)
            if spec.match_file(f"{name}/" if is_dir else name):
                continue
            yield Path(entry.path), name, st
            if is_dir:
                subdirs.append((Path(entry.path), f"{name}/"))
        # Reversed onto the stack so that directories come out in sorted order.
        stack.extend(reversed(subdirs))


def pack_directory(
    root: Path,
    out: BinaryIO,
    *,
    on_skip: Callable[[str, str], None] | None = None,
) -> PackResult:
    """Write ``root`` as a gzip-compressed tar to ``out`` (see the module doc for what goes in).

    Files are copied in ``COPY_CHUNK`` pieces: memory does not grow with file sizes. Raises
    ``PackError`` when ``root`` is not a directory, cannot be read, or nothing is left to pack."""
    if not root.is_dir():
        raise PackError(f"{root} is not a directory")
    spec, ignore_name = load_ignore(root)
    result = PackResult(ignore_file=ignore_name)

    def skip(name: str, reason: str) -> None:
        result.skipped.append((name, reason))
        if on_skip is not None:
            on_skip(name, reason)

    with tarfile.open(
        fileobj=out, mode="w:gz", compresslevel=COMPRESS_LEVEL, format=tarfile.PAX_FORMAT
    ) as tar:
        for path, name, st in _walk(root, spec):
            mode = st.st_mode
            info = tarfile.TarInfo(name)
            info.mode = stat.S_IMODE(mode)
            info.mtime = int(st.st_mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                result.directories += 1
            elif stat.S_ISLNK(mode):
                if not symlink_stays_inside(path, root):
                    skip(name, f"symbolic link to {os.readlink(path)} leads out of the directory")
                    continue
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
                result.symlinks += 1
            elif stat.S_ISREG(mode):
                _add_file(tar, info, path, name)
                result.files += 1
                result.bytes += info.size
            else:
                skip(name, "not a regular file, directory or symbolic link")
    if result.files == 0:
        raise PackError(f"nothing to deploy in {root}: no files left after the exclusions")
    return result


def _add_file(tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path, name: str) -> None:
    # Opened without following a link swapped in since the scan: O_NOFOLLOW refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PackError(f"cannot read {name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as source:
        # The size is taken from the open file: tarfile copies exactly that many bytes and raises
        # OSError if the file shrank meanwhile (a grown file is cut at the size the header says).
        info.size = os.fstat(source.fileno()).st_size
        try:
            tar.addfile(info, source)
        except OSError as exc:
            reason = exc.strerror or "it changed while it was being packed"
            raise PackError(f"cannot pack {name}: {reason}") from None
