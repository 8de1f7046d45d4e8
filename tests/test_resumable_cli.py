"""``gateway sources upload`` and ``gateway deploy`` resume (issue 20, point 9): they create the
upload with the IETF draft, keep its URL in a state file under the user's cache directory, and
on a dropped connection or a 5xx read the offset back and go on; the same command run again
after Ctrl-C (or after giving up) resumes instead of starting over.

Connections are cut (or left hanging) by ``DropProxy`` between the CLI and a real gateway whose
``public_url`` is the proxy's, so the upload resource's URL goes through it too; S3 failures come
from ``FaultProxy`` between the gateway and moto."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.__main__ import main
from gateway.client import resume_retry
from gateway.client.packing import pack_directory

from .dropproxy import DropProxy
from .faultproxy import Fault, fault_proxy
from .helpers import SMALL_PART, TOKEN, Gateway, Spawn, StartGateway, stored

GATEWAY = str(Path(sys.executable).parent / "gateway")
# Where the cut falls: two parts in, so the gateway has committed bytes to resume from.
CUT_AFTER = 2 * SMALL_PART + 5000
# A cut comes this long after the last byte let through, so the gateway saves what it received
# (a request that follows at once claims the upload and ends the cut one's saving); where a test
# counts on parts being committed, the proxy waits for them in the bucket first (``until``).
LINGER = 0.3
# Cut connections after the first get this far: their requests' heads, no part.
NO_PROGRESS = 2000


@pytest.fixture(autouse=True)
def _short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resume_retry, "FIRST_PAUSE", 0.05)


Cli = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``gateway ARGV`` in-process (in a thread, with its own loop): code, stdout, stderr."""

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        assert TOKEN not in out + err
        return code, out, err

    return run


def state_files() -> list[Path]:
    return sorted((Path(os.environ["GATEWAY_CACHE_DIR"]) / "uploads").glob("*.json"))


def uploads_created(gateway: Gateway) -> list[dict[str, Any]]:
    """The resumable uploads created (``POST`` on a source URL answered 201)."""
    return [
        x
        for x in gateway.access_lines()
        if x["method"] == "POST" and x["path"].startswith("/v1/sources/") and x["status"] == 201
    ]


def patches_from(err: str) -> list[int]:
    """The offsets the CLI's PATCHes started from (its -v lines)."""
    return [int(m) for m in re.findall(r"PATCH \S+ \(from (\d+) of", err)]


async def via_proxy(start_gateway: StartGateway, proxy: DropProxy, **more: Any) -> Gateway:
    gateway = await start_gateway({"server": {"public_url": proxy.url}, **more})
    proxy.upstream_port = gateway.server.port or 0
    return gateway


async def test_upload_resumes_after_cut_connections(
    cli: Cli, start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, tmp_path: Path
) -> None:
    proxy = DropProxy(0, after=CUT_AFTER, cuts=2, linger=LINGER)
    gateway = await via_proxy(start_gateway, proxy)
    data = os.urandom(5 * SMALL_PART + 321)
    (tmp_path / "a.tar.gz").write_bytes(data)
    async with proxy.running():
        source = await gateway.create_source(http)
        # Each cut comes once the gateway has committed the two parts more it was sent.
        proxy.until = lambda: parts_committed(s3, gateway, source) >= 2 * (proxy.dropped + 1)
        code, out, err = await cli(
            "sources", "upload", "-v", source["upload_url"], str(tmp_path / "a.tar.gz")
        )
    assert code == 0, err
    assert proxy.dropped == 2
    digest = hashlib.sha256(data).hexdigest()
    assert json.loads(out) == {"id": source["id"], "size": len(data), "sha256": digest}
    assert "the connection to" in err and "resuming in" in err
    # Resumed from what the gateway had, never from the start: one upload created.
    offsets = patches_from(err)
    assert offsets[0] == 0 and len(offsets) == 3
    assert all(later > 0 for later in offsets[1:]), offsets
    assert len(uploads_created(gateway)) == 1
    assert stored(s3, gateway, source) == data
    assert state_files() == []  # removed on success


async def test_upload_resumes_after_a_5xx(
    cli: Cli,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    s3: Any,
    moto_endpoint: str,
    tmp_path: Path,
) -> None:
    data = os.urandom(4 * SMALL_PART + 10)
    (tmp_path / "a.tar.gz").write_bytes(data)
    async with fault_proxy(moto_endpoint) as faults:
        # The third part S3 is sent fails, and the next try of it too: the PATCHes get a 5xx.
        faults.add(Fault("500", method="PUT", query="partNumber=", nth=3, times=2))
        gateway = await start_gateway({"storage": {"endpoint_url": faults.url}})
        source = await gateway.create_source(http)
        code, out, err = await cli(
            "sources", "upload", "-v", source["upload_url"], str(tmp_path / "a.tar.gz")
        )
    assert code == 0, err
    assert re.search(r"the gateway answered 5\d\d; resuming in", err), err
    offsets = patches_from(err)
    assert offsets[0] == 0 and offsets[-1] >= 2 * SMALL_PART, offsets
    assert len(uploads_created(gateway)) == 1
    assert stored(s3, gateway, source) == data
    assert json.loads(out)["sha256"] == hashlib.sha256(data).hexdigest()


async def test_gives_up_after_bounded_attempts_then_the_same_command_resumes(
    cli: Cli, start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, tmp_path: Path
) -> None:
    proxy = DropProxy(0, after=CUT_AFTER, cuts=1_000, linger=LINGER, then_after=NO_PROGRESS)
    gateway = await via_proxy(start_gateway, proxy)
    data = os.urandom(3 * SMALL_PART + 5)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    async with proxy.running():
        source = await gateway.create_source(http)
        proxy.until = lambda: parts_committed(s3, gateway, source) >= 2
        # Every connection is cut: the first once its two parts are in, the next ones before a
        # part is full, so they bring nothing new, and after MAX_ATTEMPTS of those the CLI
        # gives up.
        code, _, err = await cli("sources", "upload", source["upload_url"], str(path))
        assert code == 1
        attempts = resume_retry.MAX_ATTEMPTS
        assert f"gave up after {attempts} attempts in a row" in err
        assert "run the same command again to resume" in err
        assert len(state_files()) == 1  # kept for the next run
        assert stored(s3, gateway, source) is None
        proxy.cuts_left = 0
        code, out, err = await cli("sources", "upload", "-v", source["upload_url"], str(path))
    assert code == 0, err
    assert "resuming the upload interrupted earlier" in err
    assert re.search(r"the gateway has \d+ of \d+ bytes; sending the rest", err)
    assert patches_from(err)[0] >= 2 * SMALL_PART
    assert len(uploads_created(gateway)) == 1  # the second run created nothing
    assert stored(s3, gateway, source) == data
    assert json.loads(out)["size"] == len(data)
    assert state_files() == []


async def test_state_file_is_private_and_keyed_by_archive(
    cli: Cli, start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, tmp_path: Path
) -> None:
    proxy = DropProxy(0, after=CUT_AFTER, cuts=1_000, linger=LINGER, then_after=NO_PROGRESS)
    gateway = await via_proxy(start_gateway, proxy)
    first, other = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    first.write_bytes(os.urandom(3 * SMALL_PART))
    other.write_bytes(os.urandom(3 * SMALL_PART))
    async with proxy.running():
        source = await gateway.create_source(http)
        assert (await cli("sources", "upload", source["upload_url"], str(first)))[0] == 1
        (saved,) = state_files()
        assert saved.stat().st_mode & 0o777 == 0o600
        assert saved.parent.stat().st_mode & 0o777 == 0o700
        assert "/uploads/" in json.loads(saved.read_text())["upload"]
        # Another archive to the same source is another upload: the first one's file stays.
        proxy.cuts_left = 0
        code, _, err = await cli("sources", "upload", source["upload_url"], str(other))
    assert code == 0, err
    assert "resuming" not in err
    assert state_files() == [saved]
    assert len(uploads_created(gateway)) == 2
    assert stored(s3, gateway, source) == other.read_bytes()


async def test_an_expired_upload_starts_again(
    cli: Cli, start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, tmp_path: Path
) -> None:
    proxy = DropProxy(0, after=CUT_AFTER, cuts=1_000, linger=LINGER, then_after=NO_PROGRESS)
    gateway = await via_proxy(start_gateway, proxy)
    data = os.urandom(3 * SMALL_PART + 9)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    async with proxy.running():
        source = await gateway.create_source(http)
        assert (await cli("sources", "upload", source["upload_url"], str(path)))[0] == 1
        (saved,) = state_files()
        resource = json.loads(saved.read_text())["upload"]
        headers = {"Upload-Draft-Interop-Version": "9"}
        async with http.delete(resource, headers=headers) as resp:
            assert resp.status == 204
        proxy.cuts_left = 0
        code, _, err = await cli("sources", "upload", source["upload_url"], str(path))
    assert code == 0, err
    assert "that upload has expired; starting again" in err
    assert len(uploads_created(gateway)) == 2
    assert stored(s3, gateway, source) == data
    assert state_files() == []


async def test_ctrl_c_then_the_same_command_resumes(
    cli: Cli,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    s3: Any,
    spawn: Spawn,
    tmp_path: Path,
) -> None:
    proxy = DropProxy(0, after=CUT_AFTER, cuts=1, stall=True)
    gateway = await via_proxy(start_gateway, proxy)
    data = os.urandom(5 * SMALL_PART + 77)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    async with proxy.running():
        source = await gateway.create_source(http)
        argv = ["sources", "upload", source["upload_url"], str(path)]
        proc = await spawn(GATEWAY, *argv, stderr=asyncio.subprocess.PIPE)
        await asyncio.wait_for(proxy.stalled.wait(), 30)
        # The network hangs two parts in; the gateway commits those; the user presses Ctrl-C.
        for _ in range(100):
            if parts_committed(s3, gateway, source) >= 2:
                break
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, raw_err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 130, raw_err
        said = re.search(r"interrupted; (\d+) of (\d+) bytes sent", raw_err.decode())
        assert said is not None, raw_err
        # What the client had sent when the network hung (into socket buffers, perhaps all of
        # it): at least the two parts the gateway committed.
        assert 2 * SMALL_PART <= int(said[1]) <= int(said[2]) == len(data)
        assert "run the same command again to resume the upload" in raw_err.decode()
        assert len(state_files()) == 1
        code, out, err = await cli(*argv[:2], "-v", *argv[2:])
    assert code == 0, err
    assert "resuming the upload interrupted earlier" in err
    assert patches_from(err)[0] >= 2 * SMALL_PART  # not from the start
    assert len(uploads_created(gateway)) == 1
    assert stored(s3, gateway, source) == data
    assert json.loads(out)["sha256"] == hashlib.sha256(data).hexdigest()


def parts_committed(s3: Any, gateway: Gateway, source: dict[str, Any]) -> int:
    """The parts the upload's state object lists (read from the bucket: no request claims it)."""
    bucket = gateway.config.storage.bucket
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"uploads/{source['id']}/")
    for obj in listed.get("Contents", []):
        if obj["Key"].endswith("/state"):
            state = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            return len(state.get("parts", []))
    return 0


async def test_without_resumable_uploads_a_plain_put(
    cli: Cli,
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    s3: Any,
    moto_endpoint: str,
    tmp_path: Path,
) -> None:
    data = os.urandom(SMALL_PART + 3)
    (tmp_path / "a.tar.gz").write_bytes(data)
    async with fault_proxy(moto_endpoint) as faults:
        # A store that ignores If-Match: the gateway answers resumable requests 501.
        faults.add(Fault("ignore_conditions", times=1_000_000))
        gateway = await start_gateway({"storage": {"endpoint_url": faults.url}})
        source = await gateway.create_source(http)
        code, out, err = await cli(
            "sources", "upload", "-v", source["upload_url"], str(tmp_path / "a.tar.gz")
        )
    assert code == 0, err
    assert "-> 501" in err and "no resumable upload here: a plain PUT" in err
    assert [x["status"] for x in gateway.access_lines() if x["method"] == "PUT"] == [200]
    assert stored(s3, gateway, source) == data
    assert json.loads(out)["size"] == len(data)
    assert state_files() == []


async def test_a_refused_archive_ends_the_upload(
    cli: Cli, start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, tmp_path: Path
) -> None:
    gateway = await start_gateway({"sources": {"archive_check": "enforce"}})
    (tmp_path / "a.tar.gz").write_bytes(b"not gzip at all" * 1000)
    source = await gateway.create_source(http)
    code, _, err = await cli("sources", "upload", source["upload_url"], str(tmp_path / "a.tar.gz"))
    assert code == 1
    assert "the gateway refused the archive (422 archive_invalid" in err
    assert stored(s3, gateway, source) is None
    assert state_files() == []  # nothing to resume: it would be refused again


async def test_head_of_a_completed_upload_says_what_was_stored(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """What the CLI reads when its completing PATCH's answer was lost on the way."""
    gateway = await start_gateway()
    source = await gateway.create_source(http)
    data = b"complete in one append"
    headers = {"Upload-Draft-Interop-Version": "9", "Upload-Complete": "?0"}
    async with http.post(source["upload_url"], headers=headers) as resp:
        assert resp.status == 201
        resource = resp.headers["Location"]
    append = {
        "Upload-Draft-Interop-Version": "9",
        "Upload-Complete": "?1",
        "Upload-Offset": "0",
        "Content-Type": "application/partial-upload",
    }
    async with http.patch(resource, headers=append, data=data) as resp:
        assert resp.status == 200
    async with http.head(resource, headers={"Upload-Draft-Interop-Version": "9"}) as resp:
        assert resp.headers["Upload-Complete"] == "?1"
        assert resp.headers["Upload-Offset"] == str(len(data))
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        assert resp.headers["Repr-Digest"] == f"sha-256=:{digest}:"


def test_packing_is_reproducible(tmp_path: Path) -> None:
    """The same directory packs into the same bytes (the gzip header holds no time), so a
    deploy run again finds the upload its interrupted run began."""
    root = tmp_path / "app"
    root.mkdir()
    (root / "main.py").write_text("print('hi')\n")
    first, second = io.BytesIO(), io.BytesIO()
    pack_directory(root, first)
    pack_directory(root, second)
    assert first.getvalue() == second.getvalue()
    assert first.getvalue()[4:8] == b"\0\0\0\0"  # gzip's MTIME field


async def test_deploy_resumes_into_the_same_source(
    cli: Cli,
    start_gateway: StartGateway,
    moto_endpoint: str,
    sqs: Any,
    queue_url: str,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = DropProxy(0, after=CUT_AFTER, cuts=1_000, linger=LINGER, then_after=NO_PROGRESS)
    forward = {
        "type": "sqs",
        "queue": queue_url.rsplit("/", 1)[1],
        "endpoint_url": moto_endpoint,
        "retries": 0,
    }
    gateway = await via_proxy(start_gateway, proxy, deployments={"forward": forward})
    monkeypatch.setenv("GATEWAY_API_URL", gateway.url)  # the API directly, the uploads cut
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    root = tmp_path / "app"
    root.mkdir()
    (root / "data.bin").write_bytes(os.urandom(3 * SMALL_PART))
    argv = ["deploy", "--app", "my-app", "--no-follow", str(root)]
    async with proxy.running():
        code, _, err = await cli(*argv)
        assert code == 1 and "gave up after" in err
        created = re.search(r"created source (\S+)", err)
        assert created is not None
        assert len(state_files()) == 2  # the deploy's source, and its upload
        proxy.cuts_left = 0
        code, out, err = await cli(*argv)
    assert code == 0, err
    assert f"resuming the upload to source {created.group(1)}" in err
    assert "created source" not in err
    assert "resuming the upload interrupted earlier" in err
    deployment = json.loads(out)["deployment"]
    assert deployment["status"] == "queued"
    assert len(uploads_created(gateway)) == 1
    source = {"id": created.group(1)}
    packed = io.BytesIO()
    pack_directory(root, packed)
    assert stored(s3, gateway, source) == packed.getvalue()
    assert state_files() == []
