"""The platform's own CLI (release 1.48.0, built by the tool step where Go can fetch it, or given
as ``SCALINGO_CLI``), unchanged, against the gateway with the local stand-in deployer:
``deploy archive.tar.gz`` uploads, deploys and follows the WebSocket stream to the final status
(exit 0 on success, 1 on build-error); ``deployments`` and ``deployment-logs`` print."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import tarfile
from pathlib import Path

from .helpers import TOKEN, Gateway, Spawn, platform_cli

DEMO_LINES = ("fetched the archive", "verified", "nothing deployed")


def write_archive(path: Path) -> Path:
    with tarfile.open(path, mode="w:gz") as tar:
        data = b'print("hello")\n'
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


async def scalingo(spawn: Spawn, gateway: Gateway, home: Path, *args: str) -> tuple[int, str, str]:
    """Run the CLI with its three URLs on the gateway and the API token in its environment."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "SCALINGO_API_URL": gateway.url,
        "SCALINGO_AUTH_URL": gateway.url,
        "SCALINGO_DB_URL": gateway.url,
        "SCALINGO_API_TOKEN": TOKEN,
        "NO_COLOR": "1",
    }
    proc = await spawn(
        str(platform_cli()),
        *args,
        cwd=str(home),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_the_cli_deploys_follows_lists_and_shows_logs(
    demo_gateway: Gateway, spawn: Spawn, tmp_path: Path
) -> None:
    archive = write_archive(tmp_path / "archive.tar.gz")
    code, out, err = await scalingo(
        spawn, demo_gateway, tmp_path, "--app", "my-app", "deploy", str(archive)
    )
    assert code == 0, (out, err)
    assert "[NEW] New deploy:" in out and "from ci" in out
    assert all(f"[LOG] {line}" in out for line in DEMO_LINES[:1]), out
    assert all(line in out for line in DEMO_LINES), out
    assert out.rstrip().endswith("success"), out

    code, out, err = await scalingo(spawn, demo_gateway, tmp_path, "--app", "my-app", "deployments")
    assert code == 0, (out, err)
    assert "success" in out and "ci" in out

    code, out, err = await scalingo(
        spawn, demo_gateway, tmp_path, "--app", "my-app", "deployment-logs"
    )
    assert code == 0, (out, err)
    assert all(line in out for line in DEMO_LINES), out


async def test_a_build_error_makes_the_cli_exit_1(
    demo_gateway: Gateway, spawn: Spawn, tmp_path: Path
) -> None:
    # gzip, but not a tar archive: the stand-in deployer ends it with build-error.
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(gzip.compress(b"not a tar archive" * 64))
    code, out, err = await scalingo(
        spawn, demo_gateway, tmp_path, "--app", "my-app", "deploy", str(archive)
    )
    assert code == 1, (out, err)
    assert "build-error" in out, out
