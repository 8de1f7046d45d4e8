"""``gateway deploy`` follows its deployment to the end, and ``gateway deployments ...``, against a
real gateway whose jobs a scripted deployer takes from SQS on moto and reports on over HTTP."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import signal
import sys
import tarfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import gateway.client.follow
from gateway.__main__ import main
from gateway.client.follow import DeploymentsApi, Follower, Printer
from gateway.client.output import Reporter
from gateway.server.adapters.deployments.records import RecordStore

from .helpers import TOKEN, CliGateway, Gateway, Spawn


@dataclass
class Result:
    code: int
    out: str
    err: str


class ScriptedDeployer:
    """Takes jobs from the queue and posts ``script`` (event bodies without ids) for each."""

    def __init__(self, sqs: Any, queue_url: str, script: Sequence[dict[str, Any]]) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.script = list(script)
        self.jobs: list[dict[str, Any]] = []

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                resp = await asyncio.to_thread(
                    self.sqs.receive_message, QueueUrl=self.queue_url, WaitTimeSeconds=1
                )
                for message in resp.get("Messages", []):
                    job = json.loads(message["Body"])
                    self.jobs.append(job)
                    for number, event in enumerate(self.script, start=1):
                        await asyncio.sleep(0.05)
                        async with http.post(job["events_url"], json={"id": number, **event}) as r:
                            assert r.status == 200, await r.text()


@pytest.fixture
async def env(cli_gateway: CliGateway) -> tuple[Gateway, Any, str]:
    return await cli_gateway(poll_interval=0.1)


@pytest.fixture
async def deployer_for(
    env: tuple[Gateway, Any, str],
) -> AsyncIterator[Any]:
    tasks: list[asyncio.Task[None]] = []

    def start(script: Sequence[dict[str, Any]]) -> ScriptedDeployer:
        _, sqs, queue_url = env
        deployer = ScriptedDeployer(sqs, queue_url, script)
        tasks.append(asyncio.create_task(deployer.run()))
        return deployer

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    code = await asyncio.wait_for(asyncio.to_thread(main, list(argv)), 60)
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return Result(code, out, err)


def archive(tmp_path: Path) -> Path:
    path = tmp_path / "app.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("Procfile")
        info.size = 11
        tar.addfile(info, io.BytesIO(b"web: ./run\n"))
    return path


GOOD = [
    {"type": "status", "status": "building"},
    {"type": "log", "content": "Step 1/2: fetch"},
    {"type": "log", "content": "Step 2/2: build"},
    {"type": "status", "status": "success"},
]
BAD = [
    {"type": "status", "status": "building"},
    {"type": "log", "content": "compiling\nerror: missing semicolon"},
    {"type": "status", "status": "build-error"},
]


async def test_deploy_follows_to_success(
    env: tuple[Gateway, Any, str],
    deployer_for: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    deployer_for(GOOD)
    result = await run_cli(capsys, "deploy", "--app", "my-app", str(archive(tmp_path)))
    assert result.code == 0, result.err
    deployment = json.loads(result.out)["deployment"]
    assert deployment["status"] == "success"
    assert deployment["finished_at"] is not None
    lines = result.err.splitlines()
    assert lines.index("-----> building") < lines.index("Step 1/2: fetch")
    assert lines.index("Step 2/2: build") < lines.index("-----> success")


async def test_deploy_prints_the_final_status_even_when_the_record_takes_it_late(
    env: tuple[Gateway, Any, str],
    deployer_for: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record takes a status just after its event is in the log (here 0.5 s after, as a slow
    S3 write would): the deployment printed at the end has the status the stream ended with."""
    update = RecordStore.update

    async def late(self: RecordStore, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)
        return await update(self, *args, **kwargs)

    monkeypatch.setattr(RecordStore, "update", late)
    deployer_for(BAD)
    result = await run_cli(capsys, "deploy", "--app", "my-app", "-q", str(archive(tmp_path)))
    assert result.code == 1
    assert json.loads(result.out)["deployment"]["status"] == "build-error"
    assert "ended with build-error" in result.err


async def test_deploy_that_fails_exits_1_naming_the_status_and_the_last_lines(
    env: tuple[Gateway, Any, str],
    deployer_for: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    deployer_for(BAD)
    result = await run_cli(capsys, "deploy", "--app", "my-app", "-q", str(archive(tmp_path)))
    assert result.code == 1
    deployment = json.loads(result.out)["deployment"]
    assert deployment["status"] == "build-error"
    assert result.err.startswith(
        f"gateway: error: deployment {deployment['id']} of my-app ended with build-error;"
        " last output:\n  compiling\n  error: missing semicolon"
    )


async def test_deployments_commands(
    env: tuple[Gateway, Any, str],
    deployer_for: Any,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    deployer_for(GOOD)
    deployed = await run_cli(capsys, "deploy", "--app", "my-app", "-q", str(archive(tmp_path)))
    deployment_id = json.loads(deployed.out)["deployment"]["id"]

    listed = await run_cli(capsys, "deployments", "list", "--app", "my-app", "--per-page", "5")
    body = json.loads(listed.out)
    assert [d["id"] for d in body["deployments"]] == [deployment_id]
    assert body["meta"]["pagination"]["total_count"] == 1

    shown = await run_cli(capsys, "deployments", "show", "--app", "my-app", deployment_id)
    assert json.loads(shown.out)["deployment"]["status"] == "success"

    output = await run_cli(capsys, "deployments", "output", "--app", "my-app", deployment_id)
    assert output.out == "Step 1/2: fetch\nStep 2/2: build\n"

    followed = await run_cli(capsys, "deployments", "follow", "--app", "my-app", deployment_id)
    assert followed.code == 0
    assert json.loads(followed.out)["deployment"]["status"] == "success"
    assert "-----> success" in followed.err

    missing = await run_cli(capsys, "deployments", "show", "--app", "my-app", str(uuid.uuid4()))
    assert missing.code == 1
    assert "deployment not found (404)" in missing.err


async def test_no_follow_returns_at_queued(
    env: tuple[Gateway, Any, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = await run_cli(
        capsys, "deploy", "--app", "my-app", "--no-follow", "-q", str(archive(tmp_path))
    )
    assert result.code == 0
    assert json.loads(result.out)["deployment"]["status"] == "queued"


async def test_ctrl_c_stops_following_and_says_how_to_follow_again(
    env: tuple[Gateway, Any, str], tmp_path: Path, spawn: Spawn
) -> None:
    gateway, _, _ = env
    proc = await spawn(
        sys.executable,
        "-m",
        "gateway",
        "deploy",
        "--app",
        "my-app",
        str(archive(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GATEWAY_API_URL": gateway.url, "GATEWAY_TOKEN": TOKEN},
    )
    assert proc.stderr is not None
    seen = b""
    while b": queued" not in seen:
        seen += await asyncio.wait_for(proc.stderr.readline(), 30)
    await asyncio.sleep(0.5)  # following now: nobody reports on this deployment
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    text = (seen + err).decode()
    (deployment_id,) = {line.split()[2] for line in text.splitlines() if ": queued" in line}
    assert f"gateway deployments follow --app my-app {deployment_id}" in text
    assert "it goes on" in text
    assert out == b""


async def test_a_stream_that_ends_early_is_resumed_with_last_event_id(
    aiohttp_server: Any,
) -> None:
    """An instance shutting down ends the stream before the final status: the follower asks
    again with Last-Event-ID and gets the rest, once."""
    seen_ids: list[str | None] = []

    async def events(request: web.Request) -> web.StreamResponse:
        seen_ids.append(request.headers.get("Last-Event-ID"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if len(seen_ids) == 1:
            await response.write(b'id: 1\nevent: log\ndata: {"id":1,"content":"first"}\n\n')
            await response.write(b": server shutting down; reconnect with Last-Event-ID\n\n")
        else:
            await response.write(b": keep-alive\n\n")
            await response.write(b'id: 2\nevent: status\ndata: {"id":2,"status":"success"}\n\n')
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/apps/my-app/deployments/d-1/events", events)
    server = await aiohttp_server(app)
    printed = io.StringIO()
    printer = Printer(printed, quiet=False)
    async with aiohttp.ClientSession() as session:
        api = DeploymentsApi(session, str(server.make_url("")), TOKEN, Reporter(quiet=True))
        assert await Follower(api, "my-app", "d-1", printer).run() == "success"
    assert seen_ids == [None, "1"]
    assert printed.getvalue() == (
        "first\ngateway: the event stream ended before the final status; reconnecting in 1 s"
        " (attempt 1 of 5); the deployment keeps running on the server\n-----> success\n"
    )


async def test_following_gives_up_with_its_own_exit_code_and_says_how_to_follow_again(
    aiohttp_server: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream that keeps failing: each new attempt is said, after a pause that doubles, and
    giving up exits 3 with the command that follows again."""
    attempts: list[float] = []

    async def events(request: web.Request) -> web.Response:
        attempts.append(asyncio.get_running_loop().time())
        return web.json_response({"error": "instance draining"}, status=503)

    app = web.Application()
    app.router.add_get("/v1/apps/my-app/deployments/d-1/events", events)
    server = await aiohttp_server(app)
    monkeypatch.setattr(gateway.client.follow, "FIRST_PAUSE", 0.05)
    monkeypatch.setenv("GATEWAY_API_URL", str(server.make_url("")))
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    result = await run_cli(capsys, "deployments", "follow", "--app", "my-app", "d-1")
    assert result.code == 3
    assert result.out == ""
    lines = result.err.splitlines()
    cause = "following deployment d-1 failed: server error (503: instance draining)"
    assert lines == [
        *(
            f"gateway: {cause}; reconnecting in {0.05 * 2**n:g} s (attempt {n + 1} of 5); the"
            " deployment keeps running on the server"
            for n in range(5)
        ),
        f"gateway: error: {cause}; gave up after 5 attempts in a row",
        "  the deployment may still be running on the server; follow it again with:",
        "  gateway deployments follow --app my-app d-1",
    ]
    pauses = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(pauses) == 5
    assert pauses[-1] >= 0.05 * 2**4 > pauses[0]  # the pause doubles


async def test_a_refused_stream_is_not_retried(
    aiohttp_server: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def events(request: web.Request) -> web.Response:
        return web.json_response({"resource": "deployment", "error": "not found"}, status=404)

    app = web.Application()
    app.router.add_get("/v1/apps/my-app/deployments/d-1/events", events)
    server = await aiohttp_server(app)
    monkeypatch.setenv("GATEWAY_API_URL", str(server.make_url("")))
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    result = await run_cli(capsys, "deployments", "follow", "--app", "my-app", "d-1")
    assert (result.code, result.err) == (
        1,
        "gateway: error: following deployment d-1 failed: deployment not found (404)\n",
    )


@pytest.mark.parametrize("command", ["show", "output", "follow"])
async def test_an_empty_deployment_id_is_a_usage_error(
    env: tuple[Gateway, Any, str], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    result = await run_cli(capsys, "deployments", command, "--app", "my-app", "")
    assert (result.code, result.out) == (2, "")
    assert result.err == "gateway: error: the deployment id is empty\n"
