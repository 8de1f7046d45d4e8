"""What ``gateway`` leaves on disk and what it loads: downloads named by their type, with the
mode a new file gets under the umask; ``deploy --dry-run`` lists and sends nothing; the client
commands and ``--help`` never load the server stack."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.__main__ import main

from .helpers import TOKEN, Gateway, Spawn
from .terminal import GATEWAY, on_terminal

GZIP_BODY = gzip.compress(b"tar bytes")
ZIP_BODY = b"PK\x03\x04rest of a zip"


@pytest.fixture
async def served(aiohttp_server: Any) -> str:
    """GET /<name>: a body with the type the table says (no X-Checksum-Sha256: not verified)."""
    table = {
        "gz-typed": ("application/gzip", b"\x00not really gzip"),
        "zip-typed": ("application/zip", b"anything"),
        "octet-gzip": ("application/octet-stream", GZIP_BODY),
        "octet-zip": ("application/octet-stream", ZIP_BODY),
        "octet-other": ("application/octet-stream", b"plain bytes"),
        "text": ("text/plain; charset=utf-8", b"hello"),
        "already.tar.gz": ("application/gzip", GZIP_BODY),
    }

    async def get(request: web.Request) -> web.Response:
        content_type, body = table[request.match_info["name"]]
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/v1/sources/{name}", get)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1/sources")).rstrip("/")


@pytest.mark.parametrize(
    ("name", "file_name"),
    [
        ("gz-typed", "gz-typed.tar.gz"),
        ("zip-typed", "zip-typed.zip"),
        ("octet-gzip", "octet-gzip.tar.gz"),
        ("octet-zip", "octet-zip.zip"),
        ("octet-other", "octet-other"),
        ("text", "text"),
        ("already.tar.gz", "already.tar.gz"),
    ],
)
async def test_download_is_named_by_its_type(
    served: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    file_name: str,
) -> None:
    code = await asyncio.to_thread(
        main, ["sources", "download", "-q", f"{served}/{name}?token=t", "-o", str(tmp_path)]
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in await asyncio.to_thread(tmp_path.iterdir)) == [file_name]


async def test_download_of_a_zip_from_the_gateway(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with aiohttp.ClientSession() as http:
        source = await gateway.create_source(http)
        headers = {"Content-Type": "application/zip"}
        async with http.put(source["upload_url"], data=io.BytesIO(ZIP_BODY), headers=headers) as r:
            assert r.status == 200, await r.text()
    monkeypatch.chdir(tmp_path)
    code = await asyncio.to_thread(main, ["sources", "download", "-q", source["download_url"]])
    assert code == 0
    assert (tmp_path / f"{source['id']}.zip").read_bytes() == ZIP_BODY


@pytest.mark.parametrize(("umask", "mode"), [("022", 0o644), ("077", 0o600), ("002", 0o664)])
async def test_downloaded_file_mode_follows_the_umask(
    served: str, tmp_path: Path, spawn: Spawn, umask: str, mode: int
) -> None:
    out = tmp_path / "out.tar.gz"
    script = f'umask {umask}; exec "$0" "$@"'
    proc = await spawn(
        "sh", "-c", script, GATEWAY, "sources", "download", "-q",
        f"{served}/gz-typed", "-o", str(out),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert stat.S_IMODE(out.stat().st_mode) == mode


def app_tree(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('hello')\n")
    (root / "README").write_bytes(b"x" * 2048)
    (root / "build.log").write_text("noise")
    (root / ".gitignore").write_text("*.log\n")
    return root


async def test_dry_run_lists_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No API URL, no token: a dry run talks to nobody.
    for name in ("GATEWAY_API_URL", "GATEWAY_TOKEN", "GATEWAY_APP"):
        monkeypatch.delenv(name, raising=False)
    root = app_tree(tmp_path / "my-app")
    code = await asyncio.to_thread(main, ["deploy", "--dry-run", str(root)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out) == {
        "entries": [
            {"name": ".gitignore", "type": "file", "size": 6},
            {"name": "README", "type": "file", "size": 2048},
            {"name": "src", "type": "directory", "size": 0},
            {"name": "src/main.py", "type": "file", "size": 15},
        ],
        "files": 3,
        "bytes": 2069,
    }
    assert err == "gateway: honoured: .gitignore\n"
    # An archive: what it holds.
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "src", "src")
    code = await asyncio.to_thread(main, ["deploy", "--dry-run", "--json", str(archive)])
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed["entries"]] == ["src", "src/main.py"]
    assert listed["bytes"] == 15


async def test_dry_run_on_a_terminal(tmp_path: Path) -> None:
    root = app_tree(tmp_path / "my-app")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    run = await on_terminal(["deploy", "--dry-run", str(root)], env=env, stdout_on_terminal=True)
    assert run.code == 0, run.terminal
    assert run.terminal == (
        "gateway: honoured: .gitignore\n"
        "       6 B  .gitignore\n"
        "   2.0 KiB  README\n"
        "            src/\n"
        "      15 B  src/main.py\n"
        "3 files, 2.0 KiB in all (before compression); nothing was packed or sent\n"
    )


SERVER_STACK = (
    "aiobotocore",
    "botocore",
    "prometheus_client",
    "isal",
    "moto",
    "gateway.server.app",
)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["deploy", "--help"],
        ["deploy", "--dry-run", "."],
        ["deployments", "list", "--app", "my-app"],
        ["sources", "create"],
    ],
)
def test_the_client_does_not_load_the_server(argv: list[str], tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print('hello')\n")
    probe = (
        "import sys\nfrom gateway.__main__ import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {SERVER_STACK!r}"
        f" or m in {SERVER_STACK!r}], file=sys.stderr)\n"
        "print('aiohttp' in sys.modules, file=sys.stderr)\n"
    )
    env = {**os.environ, "GATEWAY_API_URL": "http://127.0.0.1:9", "GATEWAY_TOKEN": TOKEN}
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded, has_aiohttp = proc.stderr.splitlines()[-2:]
    assert loaded == "[]", proc.stderr
    # Help needs no HTTP client either.
    assert has_aiohttp == str("--help" not in argv), proc.stderr
