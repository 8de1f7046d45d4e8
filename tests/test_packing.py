"""Packing a directory for ``gateway deploy``: exclusions, symbolic links, metadata."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from gateway.client.packing import PackError, pack_directory, scan, symlink_stays_inside


def write(root: Path, name: str, data: str = "x") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


def pack(root: Path) -> tuple[dict[str, tarfile.TarInfo], tarfile.TarFile, list[tuple[str, str]]]:
    out = io.BytesIO()
    result = pack_directory(root, out)
    out.seek(0)
    assert out.getvalue()[:2] == b"\x1f\x8b"
    tar = tarfile.open(fileobj=out, mode="r:gz")  # noqa: SIM115 (a BytesIO: nothing to close)
    members = {m.name: m for m in tar.getmembers()}
    return members, tar, result.skipped


def read(tar: tarfile.TarFile, name: str) -> str:
    member = tar.extractfile(name)
    assert member is not None
    return member.read().decode()


def test_files_at_top_level_with_contents_and_modes(tmp_path: Path) -> None:
    write(tmp_path, "Procfile", "web: ./run")
    run = write(tmp_path, "bin/run", "#!/bin/sh\n")
    run.chmod(0o755)
    write(tmp_path, "src/app/main.py", "print('hi')")
    members, tar, skipped = pack(tmp_path)
    assert sorted(members) == ["Procfile", "bin", "bin/run", "src", "src/app", "src/app/main.py"]
    assert read(tar, "src/app/main.py") == "print('hi')"
    assert members["bin/run"].mode == 0o755
    assert members["bin"].isdir()
    assert skipped == []


def test_owner_is_anonymous(tmp_path: Path) -> None:
    write(tmp_path, "a.txt")
    members, _, _ = pack(tmp_path)
    assert (members["a.txt"].uid, members["a.txt"].gid) == (0, 0)
    assert members["a.txt"].uname == members["a.txt"].gname == ""


def test_git_directory_is_never_packed(tmp_path: Path) -> None:
    write(tmp_path, ".git/config", "[core]")
    write(tmp_path, "app.py")
    write(tmp_path, "vendor/.git", "gitdir: elsewhere")  # only the root's .git is git's own
    members, _, _ = pack(tmp_path)
    assert not any(name == ".git" or name.startswith(".git/") for name in members)
    assert "vendor/.git" in members


def test_gitignore_is_honoured(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\n!keep.log\nbuild/\n/secret.env\n# comment\n")
    for name in (
        "app.py",
        "debug.log",
        "keep.log",
        "build/out.bin",
        "secret.env",
        "sub/secret.env",
    ):
        write(tmp_path, name)
    write(tmp_path, "sub/trace.log")
    members, _, _ = pack(tmp_path)
    assert sorted(members) == [".gitignore", "app.py", "keep.log", "sub", "sub/secret.env"]


def test_gatewayignore_wins_over_gitignore(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "dist/\n")
    write(tmp_path, ".gatewayignore", "node_modules/\n")
    write(tmp_path, "dist/bundle.js")
    write(tmp_path, "node_modules/left-pad/index.js")
    out = io.BytesIO()
    result = pack_directory(tmp_path, out)
    assert result.ignore_file == ".gatewayignore"
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:gz") as tar:
        names = tar.getnames()
    assert "dist/bundle.js" in names
    assert not any(n.startswith("node_modules") for n in names)


def test_ignore_file_linked_from_outside_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "app"
    write(root, "app.py")
    write(root, "notes.txt")
    write(tmp_path, "outside-ignore", "notes.txt\n")
    (root / ".gatewayignore").symlink_to("../outside-ignore")
    out = io.BytesIO()
    result = pack_directory(root, out)
    assert result.ignore_file is None
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:gz") as tar:
        assert "notes.txt" in tar.getnames()


def test_excluded_directory_cannot_be_reincluded(tmp_path: Path) -> None:
    # As in git: a file inside an excluded directory stays out whatever a later pattern says.
    write(tmp_path, ".gitignore", "cache/\n!cache/keep.txt\n")
    write(tmp_path, "cache/keep.txt")
    write(tmp_path, "app.py")
    members, _, _ = pack(tmp_path)
    assert "cache/keep.txt" not in members


def test_symlink_inside_is_stored_as_a_link(tmp_path: Path) -> None:
    write(tmp_path, "config/real.yaml", "a: 1")
    (tmp_path / "current.yaml").symlink_to("config/real.yaml")
    (tmp_path / "config" / "again").symlink_to("../config")
    members, _, skipped = pack(tmp_path)
    assert members["current.yaml"].issym()
    assert members["current.yaml"].linkname == "config/real.yaml"
    assert members["config/again"].issym()  # a link to a directory is not descended into
    assert "config/again/real.yaml" not in members
    assert skipped == []


def test_symlinks_out_of_the_directory_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "app"
    write(root, "app.py")
    outside = write(tmp_path, "secret.txt", "TOP SECRET")
    (root / "relative-out").symlink_to("../secret.txt")
    (root / "absolute").symlink_to(outside)
    (root / "outdir").symlink_to(tmp_path)
    # Each link looks inside on paper; resolved link by link, the second leaves the root.
    (root / "d").symlink_to(".")
    (root / "sneaky").symlink_to("d/d/../..")
    members, tar, skipped = pack(root)
    assert sorted(members) == ["app.py", "d"]
    assert {name for name, _ in skipped} == {"absolute", "outdir", "relative-out", "sneaky"}
    for member in tar.getmembers():
        if member.isfile():
            assert read(tar, member.name) != "TOP SECRET"


def test_symlink_check(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    cases = {"ok": "sub", "dot": ".", "up": "..", "abs": str(tmp_path / "sub")}
    for name, target in cases.items():
        (tmp_path / name).symlink_to(target)
    assert symlink_stays_inside(tmp_path / "ok", tmp_path)
    assert symlink_stays_inside(tmp_path / "dot", tmp_path)
    assert not symlink_stays_inside(tmp_path / "up", tmp_path)
    assert not symlink_stays_inside(tmp_path / "abs", tmp_path)


def test_special_files_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "app.py")
    os.mkfifo(tmp_path / "pipe")
    members, _, skipped = pack(tmp_path)
    assert "pipe" not in members
    assert skipped == [("pipe", "not a regular file, directory or symbolic link")]


def test_nothing_left_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, ".gatewayignore", "*\n")
    with pytest.raises(PackError, match="nothing to deploy"):
        pack_directory(tmp_path, io.BytesIO())


def test_not_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="not a directory"):
        pack_directory(write(tmp_path, "file"), io.BytesIO())


def test_large_file_round_trips(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / "blob.bin").write_bytes(data)
    _, tar, _ = pack(tmp_path)
    member = tar.extractfile("blob.bin")
    assert member is not None and member.read() == data


def test_nested_gitignore_files_are_honoured_as_git_does(tmp_path: Path) -> None:
    write(tmp_path, ".gitignore", "*.log\n")
    write(tmp_path, "app.py")
    write(tmp_path, "web/.gitignore", "dist/\n!keep.log\n/local.txt\n")
    write(tmp_path, "web/dist/bundle.js")
    write(tmp_path, "web/src/dist/x.js")  # dist/ matches at any depth below web/
    write(tmp_path, "web/keep.log")  # the deeper file re-includes it
    write(tmp_path, "web/debug.log")
    write(tmp_path, "web/local.txt")  # anchored to web/
    write(tmp_path, "web/src/local.txt")
    write(tmp_path, "api/dist/server.js")  # web/.gitignore says nothing about api/
    write(tmp_path, "api/.gatewayignore", "*.js\n")  # wins over a .gitignore beside it
    write(tmp_path, "api/.gitignore", "nothing-here\n")
    out = io.BytesIO()
    result = pack_directory(tmp_path, out)
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:gz") as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert files == [
        ".gitignore",
        "api/.gatewayignore",
        "api/.gitignore",
        "app.py",
        "web/.gitignore",
        "web/keep.log",
        "web/src/local.txt",
    ]
    assert result.ignore_files == [".gitignore", "api/.gatewayignore", "web/.gitignore"]


def test_a_dangling_symlink_is_refused_naming_it(tmp_path: Path) -> None:
    write(tmp_path, "app.py")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "current").symlink_to("missing.yaml")
    with pytest.raises(PackError) as refused:
        pack_directory(tmp_path, io.BytesIO())
    assert str(refused.value) == (
        "conf/current is a symbolic link to missing.yaml, which does not exist: remove it, or"
        " list it in .gitignore or .gatewayignore"
    )
    # Listed in .gitignore, it is left out like any other path.
    write(tmp_path, ".gitignore", "conf/current\n")
    members, _, _ = pack(tmp_path)
    assert "conf/current" not in members


def test_scan_lists_what_packing_stores(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "12345")
    write(tmp_path, "lib/b.py", "1234567")
    write(tmp_path, "x.log", "ignored")
    write(tmp_path, ".gitignore", "*.log\n")
    (tmp_path / "link").symlink_to("a.py")
    found = scan(tmp_path)
    members, _, _ = pack(tmp_path)
    assert [e.name for e in found.entries] == sorted(members, key=list(members).index)
    assert (found.files, found.bytes) == (3, 5 + 7 + len("*.log\n"))
