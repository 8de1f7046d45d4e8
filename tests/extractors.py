"""Unpacking an archive as real extractors do, in a jail, and seeing where its files landed.

An archive is unpacked in ``jail/x/y/dest``: what an extractor writes by ``..`` lands in the jail,
and absolute names in the tests point into the jail too (names are made with ``jail`` in them),
so nothing escapes the test's temporary directory. ``landed_outside`` lists what an extraction
left outside ``dest``: files and directories, links inside ``dest`` that lead out of it, and a
hard link to the jail's ``secret`` file.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import warnings
from pathlib import Path

GNU_TAR = shutil.which("tar")
GO = shutil.which("go")
GO_EXTRACTOR = Path(__file__).parent / "goextract" / "main.go"
# An extraction of a crafted archive that takes longer than this is stopped (tar), or cannot
# happen (tarfile runs in-process: rows that could make it loop are not extracted).
TAR_TIMEOUT = 20


def make_jail(root: Path) -> tuple[Path, Path]:
    """``(jail, dest)``: a fresh jail with its ``secret`` file, and the empty ``dest`` in it."""
    jail = root / "jail"
    dest = jail / "x" / "y" / "dest"
    dest.mkdir(parents=True)
    (jail / "secret").write_text("secret\n")
    return jail, dest


def extract_with_tarfile(data: bytes, dest: Path) -> str | None:
    """Unpack ``data`` (a tar) with Python's tarfile and no filter, as ``extractall`` did
    before 3.14; the error that stopped it, if one did."""
    options = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            archive.extractall(dest, **options)  # type: ignore[arg-type]
    except (OSError, tarfile.TarError, KeyError, ValueError, UnicodeError, RecursionError) as exc:
        return repr(exc)
    return None


def extract_with_gnu_tar(data: bytes, dest: Path) -> str | None:
    """Unpack ``data`` with GNU tar (as root it keeps owners and modes: harmless here)."""
    assert GNU_TAR is not None
    done = subprocess.run(
        [GNU_TAR, "-xf", "-", "-C", str(dest)],
        input=data,
        capture_output=True,
        timeout=TAR_TIMEOUT,
        check=False,
    )
    return done.stderr.decode(errors="replace") if done.returncode else None


def build_go_extractor(out: Path) -> Path:
    """Compile ``goextract/main.go`` (a second or so) into ``out``; the binary's path."""
    assert GO is not None
    binary = out / "goextract"
    subprocess.run(
        [GO, "build", "-o", str(binary), str(GO_EXTRACTOR)],
        check=True,
        capture_output=True,
        env={**go_cache(out), **os.environ, "GO111MODULE": "off"},
        timeout=300,
    )
    return binary


def go_cache(out: Path) -> dict[str, str]:
    """A build cache where Go has none (no HOME); else its usual one, warm from earlier runs."""
    if "HOME" in os.environ or "XDG_CACHE_HOME" in os.environ:
        return {}
    return {"GOCACHE": str(out / "gocache")}


def extract_with_go(binary: Path, data: bytes, dest: Path) -> None:
    """Unpack ``data`` with the naive Go extractor (it stops at the first error)."""
    subprocess.run(
        [str(binary), str(dest)], input=data, capture_output=True, timeout=TAR_TIMEOUT, check=False
    )


def gnu_tar_lists(data: bytes) -> bool:
    """Whether GNU tar reads the whole of ``data`` without an error."""
    assert GNU_TAR is not None
    done = subprocess.run(
        [GNU_TAR, "-tf", "-"], input=data, capture_output=True, timeout=TAR_TIMEOUT, check=False
    )
    return done.returncode == 0


def landed_outside(jail: Path, dest: Path) -> list[str]:
    """What an extraction into ``dest`` put outside it, or made lead outside it."""
    found = []
    ancestors = {jail / "x", jail / "x" / "y", dest, jail / "secret"}
    secret = (jail / "secret").stat()
    for folder, dirs, files in os.walk(jail):
        for entry in dirs + files:
            path = Path(folder) / entry
            inside = path.is_relative_to(dest) and path != dest
            if not inside and path not in ancestors:
                found.append(f"wrote {path.relative_to(jail)}")
            elif inside and path.is_symlink():
                real = Path(os.path.realpath(path))
                if not real.is_relative_to(dest):
                    found.append(f"link {path.relative_to(dest)} -> {os.readlink(path)}")
            elif inside and path.is_file() and path.stat().st_ino == secret.st_ino:
                found.append(f"hard link {path.relative_to(dest)} to the secret")
    if (jail / "secret").read_text() != "secret\n":
        found.append("changed the secret")
    return found
