"""The client commands (``gateway deploy``, ``gateway sources ...``) against real gateways.

Sources are created, uploaded and downloaded on a real gateway on the moto server, and
``gateway deploy`` runs against the real deployments endpoint forwarding to SQS on moto. Answers
the real gateway cannot be made to give (a deployer's 502, a 403 for an app, relayed as is) come
from ``FakeApi``, a small real aiohttp server that plays the deployments endpoint per the SPEC and
passes ``POST /v1/sources`` through to the real gateway, so the CLI talks to one API URL as in
production. The CLI runs in-process in a thread (it has its own event loop; the gateway under test
runs in the test's loop), and every run checks that no API token appears in what it printed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import gateway.client.api
import gateway.client.errors
import gateway.client.transfer
from gateway.__main__ import main
from gateway.redaction import redact

from .archives import build_tree
from .helpers import LIMITED_TOKEN, TOKEN, CliGateway, Gateway, Spawn, StartGateway
from .ports import free_port

APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,46}[a-z0-9]")
WRONG_TOKEN = "wrong-token-abcdef-123"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


RunCli = Callable[..., Any]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run ``gateway ARGS`` in a thread; never shows a token, whatever happens."""

    async def run(*argv: str) -> Result:
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        for secret in (TOKEN, LIMITED_TOKEN, WRONG_TOKEN):
            assert secret not in out + err
        return Result(code, out, err)

    return run


def make_archive(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class FakeApi:
    """Plays ``POST /v1/apps/{app}/deployments`` per the SPEC; passes sources to the gateway."""

    gateway: Gateway
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    sources_created: int = 0
    apps_read: list[str] = field(default_factory=list)
    app_endpoint: bool = True  # False: a gateway from before GET /v1/apps/{app}
    list_endpoint: bool = True  # False: one from before GET /v1/apps/{app}/deployments too

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/sources", self.create_source)
        if self.app_endpoint:
            app.router.add_get("/v1/apps/{app}", self.read_app)
        if self.list_endpoint:
            app.router.add_get("/v1/apps/{app}/deployments", self.list_deployments)
        app.router.add_post("/v1/apps/{app}/deployments", self.create_deployment)
        return app

    def refusal(self, request: web.Request, app: str) -> web.Response | None:
        """The SPEC's 401 for an unknown token, 403 for an app outside the token's list."""
        allowed = {TOKEN: ["*"], LIMITED_TOKEN: ["my-app"]}
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        if token not in allowed:
            return web.json_response({"error": "invalid API token"}, status=401)
        if "*" not in allowed[token] and app not in allowed[token]:
            body = {"error": f"token may not deploy app {app!r}", "code": "forbidden"}
            return web.json_response(body, status=403)
        return None

    async def read_app(self, request: web.Request) -> web.Response:
        """``GET /v1/apps/{app}`` as SPEC's platform section has it."""
        app = request.match_info["app"]
        self.apps_read.append(app)
        refused = self.refusal(request, app)
        if refused is not None:
            return refused
        return web.json_response({"app": {"id": app, "name": app, "created_at": None}})

    async def list_deployments(self, request: web.Request) -> web.Response:
        """``GET /v1/apps/{app}/deployments``: only what the CLI's fallback check reads."""
        app = request.match_info["app"]
        self.apps_read.append(f"{app}/deployments")
        refused = self.refusal(request, app)
        if refused is not None:
            return refused
        return web.json_response({"deployments": [], "meta": {}})

    async def create_source(self, request: web.Request) -> web.Response:
        self.sources_created += 1
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.gateway.url}/v1/sources", headers=headers) as resp,
        ):
            return web.Response(
                status=resp.status,
                body=await resp.read(),
                content_type="application/json",
                headers={"X-Request-ID": resp.headers["X-Request-ID"]},
            )

    async def create_deployment(self, request: web.Request) -> web.Response:
        app = request.match_info["app"]
        refused = self.refusal(request, app)
        if refused is not None:
            return refused
        payload = await request.json()
        self.requests.append(payload)
        deployment = payload["deployment"]
        errors: dict[str, list[str]] = {}
        if not APP_NAME.fullmatch(app):
            errors["app"] = ["must be 3 to 48 lowercase letters, digits or dashes"]
        git_ref = deployment.get("git_ref")
        if git_ref is not None and (git_ref.startswith("-") or len(git_ref) > 255):
            errors["git_ref"] = ["must not start with '-'"]
        url = deployment.get("download_url", "")
        if not url.startswith(f"{self.gateway.url}/v1/sources/"):
            errors["download_url"] = ["must be https"]
        else:
            # Our own source: checked for real, as the SPEC asks (exists, and is gzip).
            async with (
                aiohttp.ClientSession(auto_decompress=False) as http,
                http.get(url, headers={"Range": "bytes=0-1"}) as resp,
            ):
                if resp.status not in (200, 206) or await resp.read() != b"\x1f\x8b":
                    errors["download_url"] = ["archive is not gzip"]
        if errors:
            return web.json_response({"errors": errors}, status=422)
        if app == "broken-deployer":
            return web.json_response({"error": "the deployer did not answer"}, status=502)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "deployment": {
                "id": str(uuid.uuid4()),
                "app_id": app,
                "created_at": now,
                "finished_at": None,
                "status": "queued",
                "git_ref": git_ref,
                "type": "archive",
                "source_url": url,
            }
        }
        return web.json_response(body, status=201)


@pytest.fixture
async def api(gateway: Gateway, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi(gateway)
    server: TestServer = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    monkeypatch.setenv("GATEWAY_API_URL", fake.url)
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    return fake


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as http, http.get(url) as resp:
        return resp.status, await resp.read()


# --- messages (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "what", "message"),
    [
        (401, {"error": "invalid API token"}, "URL", "the API token was refused (401: invalid"),
        (401, None, "URL", "the API token was refused (401); check --token or GATEWAY_TOKEN"),
        (403, {"error": "x", "code": "token_expired"}, "upload URL", "upload URL has expired"),
        (403, {"error": "x", "code": "token_invalid"}, "download URL", "download URL is not valid"),
        (403, {"error": "no", "code": "forbidden"}, "URL", "forbidden (403: no)"),
        (404, {"resource": "source", "error": "not found"}, "download URL", "nothing has been"),
        (404, {"resource": "route", "error": "not found"}, "URL", "check --api-url"),
        (404, {"resource": "route", "error": "not found"}, "upload URL", "not a source URL"),
        (404, {"resource": "app", "error": "not found"}, "URL", "app not found (404)"),
        (413, {"error": "too big"}, "upload URL", "the archive is too large (413: too big)"),
        (422, {"errors": {"a": ["x", "y"], "b": ["z"]}}, "URL", "(422): a: x, y; b: z"),
        (422, {"errors": {}}, "URL", "validation failed (422)"),
        (502, {"error": "S3\nsaid\tno"}, "URL", "server error (502: S3 said no)"),
        (503, "<html>", "URL", "server error (503)"),
        (418, {"error": "teapot"}, "URL", "unexpected answer (418: teapot)"),
    ],
)
def test_describe_error(status: int, body: Any, what: str, message: str) -> None:
    described = gateway.client.errors.describe_error(status, body, what=what)
    assert message in described
    assert "\n" not in described


def test_long_server_messages_are_cut() -> None:
    described = gateway.client.errors.describe_error(500, {"error": "x" * 1000}, what="URL")
    assert len(described) < 400


def test_redact_and_safe_url() -> None:
    url = "https://u:p@gw.example/v1/sources/1?token=abc.def&x=1#frag"
    assert gateway.client.errors.safe_url(url) == "https://gw.example/v1/sources/1"
    assert redact(f"see {url}", ("secret",)) == (
        "see https://u:p@gw.example/v1/sources/1?token=[redacted]&x=1#frag"
    )
    assert redact("Bearer secret-token", ("secret-token",)) == "Bearer [redacted]"
    assert redact("it is secret-token here", ("secret-token",)) == "it is [redacted] here"


# --- gateway deploy -------------------------------------------------------------------------


async def test_deploy_archive(api: FakeApi, run_cli: RunCli, tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "app.tar.gz", {"Procfile": b"web: ./run\n"})
    result = await run_cli(
        "deploy", "--app", "my-app", "--git-ref", "v0.0.2", "--no-follow", str(archive)
    )
    assert result.code == 0, result.err
    deployment = result.json()["deployment"]
    assert deployment["app_id"] == "my-app"
    assert deployment["status"] == "queued"
    assert deployment["git_ref"] == "v0.0.2"
    assert deployment["type"] == "archive"
    # The request in the published API's shape, with the source's download_url.
    (sent,) = api.requests
    assert sent == {"deployment": {"git_ref": "v0.0.2", "download_url": deployment["source_url"]}}
    # What the deployer will fetch is the archive, byte for byte.
    assert await fetch(deployment["source_url"]) == (200, archive.read_bytes())
    assert "created source" in result.err
    assert f"sha256 {hashlib.sha256(archive.read_bytes()).hexdigest()}" in result.err


async def test_deploy_without_git_ref_sends_none(
    api: FakeApi, run_cli: RunCli, tmp_path: Path
) -> None:
    archive = make_archive(tmp_path / "app.tar.gz", {"a": b"a"})
    result = await run_cli("deploy", "--app", "my-app", "--quiet", "--no-follow", str(archive))
    assert result.code == 0, result.err
    assert "git_ref" not in api.requests[0]["deployment"]
    assert result.err == ""  # --quiet: nothing but the JSON on stdout


async def test_deploy_directory(api: FakeApi, run_cli: RunCli, tmp_path: Path) -> None:
    root = tmp_path / "app"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('hi')\n")
    (root / "debug.log").write_text("noise")
    (root / ".gitignore").write_text("*.log\n")
    (tmp_path / "secret").write_text("outside")
    (root / "leak").symlink_to("../secret")
    result = await run_cli("deploy", "--app", "my-app", "--no-follow", str(root))
    assert result.code == 0, result.err
    status, body = await fetch(result.json()["deployment"]["source_url"])
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = tar.getnames()
    assert sorted(names) == [".gitignore", "src", "src/main.py"]
    assert ".gitignore honoured" in result.err
    assert "skipped leak: symbolic link to ../secret leads out of the directory" in result.err


async def test_deploy_output_is_clean_json_from_the_script(
    api: FakeApi, tmp_path: Path, spawn: Spawn
) -> None:
    """The installed ``gateway`` script, as a user runs it: stdout is the deployment alone."""
    archive = make_archive(tmp_path / "app.tar.gz", {"a": b"a"})
    script = Path(sys.executable).parent / "gateway"
    proc = await spawn(
        str(script),
        "deploy",
        "--app=my-app",
        "--no-follow",
        str(archive),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["deployment"]["status"] == "queued"
    assert TOKEN.encode() not in out + err


@pytest.mark.parametrize(
    ("git_ref", "problem"),
    [
        ("-rf", "must not start with '-'"),
        ("v1\tx", "must contain printable characters only"),
        ("v" * 256, "must be at most 255 characters"),
    ],
)
async def test_deploy_checks_the_git_ref_before_anything(
    api: FakeApi, run_cli: RunCli, tmp_path: Path, git_ref: str, problem: str
) -> None:
    archive = make_archive(tmp_path / "app.tar.gz", {"a": b"a"})
    result = await run_cli("deploy", "--app", "my-app", f"--git-ref={git_ref}", str(archive))
    assert (result.code, result.out) == (2, "")
    assert result.err == f"gateway: error: git_ref {git_ref!r} {problem}\n"
    assert (api.apps_read, api.sources_created, api.requests) == ([], 0, [])


async def test_deploy_that_fails_after_the_upload_says_how_to_deploy_it_again(
    api: FakeApi, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployer answers 502 once the archive is uploaded: the message says it is uploaded,
    until when, and the command that deploys it without uploading again; that command works."""
    archive = make_archive(tmp_path / "app.tar.gz", {"a": b"a"})
    argv = ["deploy", "--app", "broken-deployer", "--git-ref", "v1", "--no-follow", str(archive)]
    result = await run_cli(*argv)
    assert (result.code, result.out) == (1, "")
    assert api.sources_created == 1
    lines = result.err.splitlines()
    first = lines.index(
        "gateway: error: deploying broken-deployer failed: server error (502: the deployer did"
        " not answer)"
    )
    source_url = api.requests[0]["deployment"]["download_url"]
    source_id = source_url.split("/")[-1].split("?")[0]
    assert re.fullmatch(
        rf"  the archive is uploaded \(source {source_id}\); its URL works until"
        r" \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\.",
        lines[first + 1],
    )
    assert lines[first + 2 :] == [
        "  deploy it without uploading it again with:",
        f"  gateway deploy --app broken-deployer --git-ref v1 --source-url '{source_url}'",
    ]
    # The command, as printed, deploys the same archive (to an app whose deployer works).
    command = shlex.split(lines[-1].replace("broken-deployer", "my-app"))
    again = await run_cli(*command[1:], "--no-follow")
    assert again.code == 0, again.err
    assert api.sources_created == 1  # nothing uploaded again
    assert api.requests[-1]["deployment"] == {"git_ref": "v1", "download_url": source_url}


async def test_deploy_source_url(api: FakeApi, run_cli: RunCli, tmp_path: Path) -> None:
    """``--source-url`` deploys an archive already online: no source, no upload."""
    archive = make_archive(tmp_path / "a.tar.gz", {"a": b"a"})
    async with aiohttp.ClientSession() as http:
        source = await api.gateway.uploaded_source(http, archive.read_bytes())
    url = source["download_url"]
    result = await run_cli("deploy", "--app", "my-app", "--source-url", url, "--no-follow")
    assert result.code == 0, result.err
    assert result.json()["deployment"]["source_url"] == url
    assert api.sources_created == 0
    assert api.requests == [{"deployment": {"download_url": url}}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "pass PATH (an archive or a directory) or --source-url URL, one of them"),
        (["PATH", "--source-url", "https://x.example/a"], "pass PATH (an archive or a directory)"),
        (["--source-url", "ftp://x.example/a"], "--source-url must be an absolute http(s) URL"),
    ],
)
async def test_deploy_source_url_usage(
    api: FakeApi, run_cli: RunCli, tmp_path: Path, argv: list[str], message: str
) -> None:
    archive = str(make_archive(tmp_path / "a.tar.gz", {"a": b"a"}))
    argv = [archive if word == "PATH" else word for word in argv]
    result = await run_cli("deploy", "--app", "my-app", *argv)
    assert result.code == 2
    assert result.err.startswith(f"gateway: error: {message}")
    assert api.apps_read == []


@pytest.mark.parametrize("app", ["X", "Bad_App", "-my-app", "my-app-", "9lives", "a" * 49])
async def test_deploy_checks_the_app_name_before_uploading(
    api: FakeApi, run_cli: RunCli, tmp_path: Path, app: str
) -> None:
    archive = make_archive(tmp_path / "app.tar.gz", {"a": b"a"})
    result = await run_cli("deploy", f"--app={app}", "-q", str(archive))
    assert result.code == 2
    assert result.err == (
        f"gateway: error: app name {app!r} must be 3 to 48 lowercase letters, digits or dashes,"
        " starting with a letter and not ending with a dash\n"
    )
    assert api.requests == []  # no source created, nothing uploaded


@pytest.mark.parametrize(
    ("token", "app", "message"),
    [
        (
            LIMITED_TOKEN,
            "other-app",
            "checking app other-app failed: forbidden (403: token may not deploy app 'other-app')",
        ),
        (
            WRONG_TOKEN,
            "my-app",
            "checking app my-app failed: the API token was refused (401: invalid API token);"
            " check --token or GATEWAY_TOKEN",
        ),
    ],
)
async def test_deploy_checks_token_and_app_before_packing(
    api: FakeApi,
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    token: str,
    app: str,
    message: str,
) -> None:
    monkeypatch.setenv("GATEWAY_TOKEN", token)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    result = await run_cli("deploy", "--app", app, str(tmp_path / "app"))
    assert (result.code, result.out) == (1, "")
    assert result.err == f"gateway: error: {message}\n"  # no "packed" line: nothing was packed
    assert api.apps_read == [app]
    assert (api.sources_created, api.requests) == (0, [])


async def test_deploy_app_from_the_environment(
    api: FakeApi, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_archive(tmp_path / "app.tar.gz", {"a": b"a"})
    monkeypatch.delenv("GATEWAY_APP", raising=False)
    missing = await run_cli("deploy", "--no-follow", str(archive))
    assert (missing.code, missing.err) == (
        2,
        "gateway: error: no app: pass --app APP or set GATEWAY_APP\n",
    )
    monkeypatch.setenv("GATEWAY_APP", "my-app")
    result = await run_cli("deploy", "--no-follow", "-q", str(archive))
    assert result.code == 0, result.err
    assert result.json()["deployment"]["app_id"] == "my-app"
    other = await run_cli("deploy", "--app", "other-app", "--no-follow", "-q", str(archive))
    assert other.json()["deployment"]["app_id"] == "other-app"  # --app wins


async def test_deploy_not_a_gzip_file(api: FakeApi, run_cli: RunCli, tmp_path: Path) -> None:
    plain = tmp_path / "app.tar"
    plain.write_bytes(b"not gzip")
    result = await run_cli("deploy", "--app", "my-app", str(plain))
    assert result.code == 2
    assert result.err == (
        f"gateway: error: {plain} is not a gzip-compressed archive: pass a .tar.gz file or a"
        " directory\n"
    )


async def test_deploy_missing_path(api: FakeApi, run_cli: RunCli, tmp_path: Path) -> None:
    result = await run_cli("deploy", "--app", "my-app", str(tmp_path / "nope"))
    assert (result.code, result.err) == (
        2,
        f"gateway: error: {tmp_path / 'nope'}: no such file or directory\n",
    )


async def test_deploy_empty_directory(api: FakeApi, run_cli: RunCli, tmp_path: Path) -> None:
    result = await run_cli("deploy", "--app", "my-app", str(tmp_path))
    assert result.code == 2
    assert "nothing to deploy" in result.err


# --- gateway deploy against the real endpoint -------------------------------------------------


@pytest.fixture
async def real(cli_gateway: CliGateway) -> tuple[Gateway, Any, str]:
    """A gateway with the real deployments endpoint forwarding to a fresh SQS queue on moto."""
    return await cli_gateway()


async def test_deploy_directory_real_endpoint(
    real: tuple[Gateway, Any, str], run_cli: RunCli, tmp_path: Path
) -> None:
    _, sqs, queue_url = real
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Procfile").write_text("web: ./run\n")
    result = await run_cli(
        "deploy", "--app", "my-app", "--git-ref", "v0.0.2", "--no-follow", str(tmp_path / "app")
    )
    assert result.code == 0, result.err
    deployment = result.json()["deployment"]
    assert deployment["app_id"] == "my-app"
    assert deployment["status"] == "queued"
    assert deployment["git_ref"] == "v0.0.2"
    uploaded = re.search(r"sha256 ([0-9a-f]{64})", result.err)
    assert uploaded is not None
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages", [])
    (job,) = [json.loads(m["Body"]) for m in messages]
    assert job["app"] == "my-app"
    assert job["sha256"] == uploaded.group(1)
    assert (await fetch(job["download_url"]))[0] == 200


async def test_deploy_refused_real_endpoint(
    real: tuple[Gateway, Any, str],
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    s3: Any,
) -> None:
    """The real gateway refuses the app through GET /v1/apps/{app}, before anything is packed."""
    gateway, _, _ = real
    monkeypatch.setenv("GATEWAY_TOKEN", LIMITED_TOKEN)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    result = await run_cli("deploy", "--app", "other-app", str(tmp_path / "app"))
    assert (result.code, result.out) == (1, "")
    assert re.fullmatch(
        r"gateway: error: checking app other-app failed: forbidden \(403: token 'limited' may not"
        r" deploy app 'other-app'\) \[request id \w+\]\n",
        result.err,
    ), result.err
    # Nothing uploaded (the resumable store's start-up probe may still be writing under its own
    # prefix: only the sources' prefix is looked at).
    storage = gateway.config.storage
    listed = s3.list_objects_v2(Bucket=storage.bucket, Prefix=storage.prefix)
    assert listed.get("KeyCount", 0) == 0
    assert [line["path"] for line in gateway.access_lines()] == ["/v1/apps/other-app"]


async def test_deploy_checks_through_the_list_on_a_gateway_without_the_app_endpoint(
    gateway: Gateway,
    aiohttp_server: Any,
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway from before GET /v1/apps/{app} answers 404 there: the deployments list, which
    checks the token and the app as well, refuses before anything is sent."""
    fake = FakeApi(gateway, app_endpoint=False)
    server: TestServer = await aiohttp_server(fake.app())
    monkeypatch.setenv("GATEWAY_API_URL", str(server.make_url("")).rstrip("/"))
    monkeypatch.setenv("GATEWAY_TOKEN", LIMITED_TOKEN)
    archive = make_archive(tmp_path / "app.tar.gz", {"a": b"a"})
    result = await run_cli("deploy", "--app", "other-app", str(archive))
    assert (result.code, result.err) == (
        1,
        "gateway: error: checking app other-app failed: forbidden (403: token may not deploy app"
        " 'other-app')\n",
    )
    assert fake.apps_read == ["other-app/deployments"]
    assert fake.sources_created == 0


async def test_deploy_skips_the_app_check_on_a_gateway_without_it(
    gateway: Gateway,
    aiohttp_server: Any,
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway without either endpoint answers 404 to both: deploy goes on without the check."""
    fake = FakeApi(gateway, app_endpoint=False, list_endpoint=False)
    server: TestServer = await aiohttp_server(fake.app())
    monkeypatch.setenv("GATEWAY_API_URL", str(server.make_url("")).rstrip("/"))
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    archive = make_archive(tmp_path / "app.tar.gz", {"a": b"a"})
    result = await run_cli("deploy", "--app", "my-app", "--no-follow", "-v", str(archive))
    assert result.code == 0, result.err
    assert "checking app my-app: the gateway has no such endpoint; skipped" in result.err
    assert fake.apps_read == []
    assert len(fake.requests) == 1


# --- settings --------------------------------------------------------------------------------


async def test_missing_api_url(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_API_URL", raising=False)
    result = await run_cli("sources", "create", "--token", TOKEN)
    assert (result.code, result.err) == (
        2,
        "gateway: error: no API URL: pass --api-url URL or set GATEWAY_API_URL\n",
    )


async def test_missing_token(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_TOKEN", raising=False)
    result = await run_cli("sources", "create", "--api-url", "http://127.0.0.1:1")
    assert (result.code, result.err) == (
        2,
        "gateway: error: no API token: pass --token TOKEN or set GATEWAY_TOKEN\n",
    )


async def test_options_override_environment(
    gateway: Gateway, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_API_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("GATEWAY_TOKEN", WRONG_TOKEN)
    result = await run_cli("sources", "create", "--api-url", gateway.url, "--token", TOKEN)
    assert result.code == 0, result.err


async def test_network_down(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("GATEWAY_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    result = await run_cli("sources", "create")
    assert result.code == 1
    assert result.err == (
        f"gateway: error: creating a source failed: connection refused by 127.0.0.1:{port};"
        f" is the gateway running at http://127.0.0.1:{port}/v1/sources?\n"
    )


async def test_wrong_api_url(gateway: Gateway, run_cli: RunCli) -> None:
    result = await run_cli("sources", "create", "--api-url", f"{gateway.url}/v1", "--token", TOKEN)
    assert result.code == 1
    assert result.err.startswith(
        "gateway: error: creating a source failed: no such endpoint (404): check --api-url or"
        " GATEWAY_API_URL (the gateway's base URL, without /v1) [request id "
    )


async def test_verbose_shows_requests_not_tokens(
    gateway: Gateway, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GATEWAY_API_URL", gateway.url)
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    created = await run_cli("sources", "create", "--verbose")
    assert f"POST {gateway.url}/v1/sources -> 201 (request id " in created.err
    upload_url = created.json()["upload_url"]
    archive = make_archive(tmp_path / "a.tar.gz", {"a": b"a"})
    uploaded = await run_cli("sources", "upload", "-v", upload_url, str(archive))
    assert uploaded.code == 0, uploaded.err
    # A resumable upload: created, then its bytes in one PATCH, each request logged.
    assert "-> 201" in uploaded.err
    assert "/uploads/" in uploaded.err
    assert "PATCH " in uploaded.err
    assert "token=" not in uploaded.err  # the URL's own token is a credential too


# --- gateway sources ---------------------------------------------------------------------------


@pytest.fixture
def env(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("GATEWAY_API_URL", gateway.url)
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    return gateway


async def create(run_cli: RunCli) -> dict[str, Any]:
    result = await run_cli("sources", "create")
    assert result.code == 0, result.err
    body: dict[str, Any] = result.json()
    return body


async def test_sources_create(env: Gateway, run_cli: RunCli) -> None:
    source = await create(run_cli)
    assert source["upload_url"].startswith(f"{env.url}/v1/sources/{source['id']}?token=")
    assert source["download_url"].startswith(f"{env.url}/v1/sources/{source['id']}?token=")
    assert source["source"]["id"] == source["id"]


async def test_sources_create_bad_token(env: Gateway, run_cli: RunCli) -> None:
    result = await run_cli("sources", "create", "--token", WRONG_TOKEN)
    assert result.code == 1
    assert "the API token was refused (401: invalid API token)" in result.err
    assert result.out == ""


async def test_upload_then_download(env: Gateway, run_cli: RunCli, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    archive = tmp_path / "up.tar.gz"
    archive.write_bytes(data)
    source = await create(run_cli)
    uploaded = await run_cli("sources", "upload", source["upload_url"], str(archive))
    assert uploaded.code == 0, uploaded.err
    digest = hashlib.sha256(data).hexdigest()
    assert uploaded.json() == {"id": source["id"], "size": len(data), "sha256": digest}
    assert f"sha256 verified ({digest})" in uploaded.err

    out = tmp_path / "down.tar.gz"
    downloaded = await run_cli("sources", "download", source["download_url"], "-o", str(out))
    assert downloaded.code == 0, downloaded.err
    assert out.read_bytes() == data
    assert f"to {out}, sha256 verified ({digest})" in downloaded.err
    assert names_in(tmp_path) == ["down.tar.gz", "up.tar.gz"]


async def test_download_default_name(
    env: Gateway, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await create(run_cli)
    archive = make_archive(tmp_path / "a.tar.gz", {"a": b"a"})
    assert (await run_cli("sources", "upload", source["upload_url"], str(archive))).code == 0
    monkeypatch.chdir(tmp_path)
    result = await run_cli("sources", "download", "-q", source["download_url"])
    assert (result.code, result.err) == (0, "")
    assert (tmp_path / f"{source['id']}.tar.gz").read_bytes() == archive.read_bytes()


async def test_upload_expired_url(env: Gateway, run_cli: RunCli, tmp_path: Path) -> None:
    source = await create(run_cli)
    env.clock.advance(601)
    archive = make_archive(tmp_path / "a.tar.gz", {"a": b"a"})
    result = await run_cli("sources", "upload", source["upload_url"], str(archive))
    assert result.code == 1
    assert re.fullmatch(
        rf"gateway: error: uploading {re.escape(str(archive))} failed: the upload URL has expired"
        r" \(403 token_expired\); create a new source and start again \[request id [\w-]+\]\n",
        result.err,
    )


async def test_upload_invalid_url_token(env: Gateway, run_cli: RunCli, tmp_path: Path) -> None:
    source = await create(run_cli)
    archive = make_archive(tmp_path / "a.tar.gz", {"a": b"a"})
    # A download token on the upload URL: well signed, wrong purpose.
    url = source["upload_url"].split("?")[0] + "?" + source["download_url"].split("?")[1]
    result = await run_cli("sources", "upload", url, str(archive))
    assert result.code == 1
    assert "the upload URL is not valid (403 token_invalid)" in result.err
    assert "token=" not in result.err


async def test_upload_too_large(
    start_gateway: StartGateway, run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await start_gateway({"sources": {"max_size_bytes": 64 * 1024}})
    monkeypatch.setenv("GATEWAY_API_URL", gateway.url)
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    source = await create(run_cli)
    big = tmp_path / "big.tar.gz"
    big.write_bytes(os.urandom(4 * 1024 * 1024))
    result = await run_cli("sources", "upload", source["upload_url"], str(big))
    assert result.code == 1
    assert (
        f"uploading {big} failed: the archive is too large (413: upload is larger than the limit"
        " of 65536 bytes)" in result.err
    )
    assert len(result.err.splitlines()) == 1


async def test_upload_missing_file(run_cli: RunCli, tmp_path: Path) -> None:
    result = await run_cli("sources", "upload", "http://127.0.0.1:1/x", str(tmp_path / "nope"))
    assert (result.code, result.err) == (2, f"gateway: error: {tmp_path / 'nope'}: no such file\n")


async def test_download_not_uploaded(env: Gateway, run_cli: RunCli, tmp_path: Path) -> None:
    source = await create(run_cli)
    out = tmp_path / "out.tar.gz"
    result = await run_cli("sources", "download", source["download_url"], "-o", str(out))
    assert result.code == 1
    assert "downloading failed: not found (404): nothing has been uploaded to this source yet" in (
        result.err
    )
    assert names_in(tmp_path) == []


async def test_download_expired(env: Gateway, run_cli: RunCli, tmp_path: Path) -> None:
    source = await create(run_cli)
    env.clock.advance(601)
    result = await run_cli("sources", "download", source["download_url"], "-o", str(tmp_path / "o"))
    assert result.code == 1
    assert "the download URL has expired (403 token_expired)" in result.err


async def uploaded_source(run_cli: RunCli, tmp_path: Path, data: bytes) -> dict[str, Any]:
    source = await create(run_cli)
    archive = tmp_path / "in.bin"
    archive.write_bytes(data)
    assert (await run_cli("sources", "upload", source["upload_url"], str(archive))).code == 0
    archive.unlink()
    return source


async def test_download_checksum_mismatch(
    env: Gateway, run_cli: RunCli, tmp_path: Path, s3: Any
) -> None:
    source = await uploaded_source(run_cli, tmp_path, b"the real archive")
    # The stored checksum no longer matches the bytes (corruption between upload and download).
    wrong = hashlib.sha256(b"something else").hexdigest()
    key = f"sources/{source['id']}"
    tags = s3.get_object_tagging(Bucket=env.config.storage.bucket, Key=key)["TagSet"]
    tags = [t if t["Key"] != "sha256" else {"Key": "sha256", "Value": wrong} for t in tags]
    s3.put_object_tagging(Bucket=env.config.storage.bucket, Key=key, Tagging={"TagSet": tags})
    out = tmp_path / "out.tar.gz"
    out.write_bytes(b"previous download")
    result = await run_cli("sources", "download", source["download_url"], "-o", str(out))
    assert result.code == 1
    actual = hashlib.sha256(b"the real archive").hexdigest()
    assert result.err == (
        f"gateway: error: downloading failed: sha256 mismatch: the server announced {wrong}, the"
        f" received 16 bytes have {actual}; the partial file was deleted\n"
    )
    assert out.read_bytes() == b"previous download"  # an earlier file is left as it was
    assert names_in(tmp_path) == ["out.tar.gz"]  # no partial file


async def test_download_without_checksum_warns(
    env: Gateway, run_cli: RunCli, tmp_path: Path, s3: Any
) -> None:
    source = await uploaded_source(run_cli, tmp_path, b"data")
    s3.delete_object_tagging(Bucket=env.config.storage.bucket, Key=f"sources/{source['id']}")
    out = tmp_path / "out.tar.gz"
    result = await run_cli("sources", "download", "-q", source["download_url"], "-o", str(out))
    assert result.code == 0
    assert "NOT verified: the server sent no X-Checksum-Sha256 header" in result.err
    assert out.read_bytes() == b"data"


# Runs the gateway command and reports its peak RSS as the kernel counts it for that program.
PEAK_RSS = Path(__file__).parents[1] / "bench" / "peak_rss.py"


def peak_rss_of(argv: list[str]) -> int:
    """Run ``gateway ARGV`` in a fresh python to its end; its peak resident set size in bytes."""
    proc = subprocess.run([sys.executable, str(PEAK_RSS), *argv], capture_output=True, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    label, kib = err.splitlines()[-1].split()
    assert label == "peak-rss-kib"
    return int(kib) * 1024


async def test_upload_streams_from_disk(
    start_gateway: StartGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's peak memory does not grow with the file (bench/ measures it at 256 MiB)."""
    gateway = await start_gateway({"sources": {"max_size_bytes": 64 * 1024 * 1024}})
    monkeypatch.setenv("GATEWAY_API_URL", gateway.url)
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    peaks = []
    for size in (4096, 48 * 1024 * 1024):
        archive = tmp_path / f"{size}.bin"
        with archive.open("wb") as f:
            f.truncate(size)  # sparse: the disk is not the point, the client's memory is
        async with aiohttp.ClientSession() as http:
            source = await gateway.create_source(http)
        argv = ["sources", "upload", "-q", source["upload_url"], str(archive)]
        peaks.append(await asyncio.to_thread(peak_rss_of, argv))
    small, large = peaks
    # Reading the file whole would add 48 MiB; streaming adds a few socket buffers.
    assert large - small < 16 * 1024 * 1024, (small, large)


# --- the wire, seen from a recording server ----------------------------------------------------


@pytest.fixture
async def recorder(aiohttp_server: Any) -> tuple[str, list[web.Request], list[bytes]]:
    """A server that records PUTs and answers like the gateway, and a GET that breaks off."""
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def put(request: web.Request) -> web.Response:
        seen.append(request)
        body = await request.read()
        bodies.append(body)
        digest = hashlib.sha256(body).hexdigest()
        return web.json_response({"id": "x", "size": len(body), "sha256": digest})

    async def broken_get(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Checksum-Sha256": "0" * 64})
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        assert request.transport is not None
        request.transport.close()
        return response

    async def lying_put(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": "x", "size": 1, "sha256": "0" * 64})

    async def stalled_get(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 1_000_000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        seen.append(request)
        await asyncio.sleep(60)  # the client is interrupted long before
        return response

    async def no_continue(request: web.Request) -> None:
        """Like a proxy that swallows the interim answer: never says 100 Continue."""

    async def hung_post(request: web.Request) -> web.Response:
        await asyncio.sleep(10)  # the client gives up long before
        return web.json_response({})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/hung/v1/sources", hung_post)
    app.router.add_get("/stalled", stalled_get)
    app.router.add_put("/upload", put)
    app.router.add_put("/no-continue", put, expect_handler=no_continue)
    app.router.add_put("/lying", lying_put)
    app.router.add_get("/broken", broken_get)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), seen, bodies


async def test_upload_request_shape(
    recorder: tuple[str, list[web.Request], list[bytes]],
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    url, seen, bodies = recorder
    data = os.urandom(1_000_000)
    (tmp_path / "a.tar.gz").write_bytes(data)
    result = await run_cli("sources", "upload", f"{url}/upload?token=t", str(tmp_path / "a.tar.gz"))
    assert result.code == 0, result.err
    (request,) = seen
    assert request.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in request.headers
    assert request.headers["Expect"] == "100-continue"
    assert request.headers["Content-Type"] == "application/gzip"
    # The API token is for the API only: a source URL carries its own.
    assert "Authorization" not in request.headers
    assert bodies == [data]


async def test_upload_without_100_continue(
    recorder: tuple[str, list[web.Request], list[bytes]],
    run_cli: RunCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway.client.transfer, "EXPECT_WAIT", 0.3)
    url, _, bodies = recorder
    data = os.urandom(500_000)
    (tmp_path / "a.tar.gz").write_bytes(data)
    argv = ["sources", "upload", "-v", f"{url}/no-continue", str(tmp_path / "a.tar.gz")]
    result = await asyncio.wait_for(run_cli(*argv), 30)
    assert result.code == 0, result.err
    assert "no 100 Continue after 0.3 s: sending the body anyway" in result.err
    assert bodies == [data]


async def test_api_not_answering(
    recorder: tuple[str, list[web.Request], list[bytes]],
    run_cli: RunCli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _, _ = recorder
    monkeypatch.setattr(gateway.client.api, "TIMEOUT", aiohttp.ClientTimeout(sock_read=0.3))
    result = await run_cli("sources", "create", "--api-url", f"{url}/hung", "--token", TOKEN)
    assert (result.code, result.err) == (
        1,
        f"gateway: error: creating a source failed: {url}/hung/v1/sources did not answer in time\n",
    )


async def test_upload_detects_a_wrong_answer(
    recorder: tuple[str, list[web.Request], list[bytes]], run_cli: RunCli, tmp_path: Path
) -> None:
    url, _, _ = recorder
    (tmp_path / "a.tar.gz").write_bytes(b"abc")
    result = await run_cli("sources", "upload", f"{url}/lying", str(tmp_path / "a.tar.gz"))
    assert result.code == 1
    assert "the gateway stored 1 bytes with sha256 0000" in result.err


async def test_download_cut_short(
    recorder: tuple[str, list[web.Request], list[bytes]], run_cli: RunCli, tmp_path: Path
) -> None:
    url, _, _ = recorder
    out = tmp_path / "out.tar.gz"
    result = await run_cli("sources", "download", f"{url}/broken?token=t", "-o", str(out))
    assert result.code == 1
    assert result.err == (
        "gateway: error: downloading failed: the connection broke before the end of the data\n"
    )
    assert names_in(tmp_path) == []


def another_thread(pid: int) -> int:
    """The id of a thread of process ``pid`` other than its main thread (Linux)."""
    others = [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]
    assert others, "the client runs a worker thread while it downloads"
    return others[0]


# Ctrl-C is sent to the process, and the kernel may give it to any of its threads: ``thread``
# aims it at one that is not the main thread (on Linux, kill() with a thread id does that).
@pytest.mark.parametrize("target", ["process", "thread"])
async def test_interrupted_download_leaves_nothing(
    recorder: tuple[str, list[web.Request], list[bytes]],
    tmp_path: Path,
    spawn: Spawn,
    target: str,
) -> None:
    url, seen, _ = recorder
    script = Path(sys.executable).parent / "gateway"
    out = tmp_path / "out.tar.gz"
    proc = await spawn(
        str(script),
        "sources",
        "download",
        f"{url}/stalled",
        "-o",
        str(out),
        stderr=asyncio.subprocess.PIPE,
    )
    # Wait until the server has sent the first bytes, give the client a moment to take them,
    # then press Ctrl-C in the middle of the body.
    for _ in range(200):
        if seen:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert [name.endswith(".part") for name in await asyncio.to_thread(names_in, tmp_path)] == [
        True
    ]
    if target == "process":
        proc.send_signal(signal.SIGINT)
    else:
        os.kill(another_thread(proc.pid), signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert err.decode() == "gateway: interrupted\n"
    assert await asyncio.to_thread(names_in, tmp_path) == []


async def test_download_into_a_missing_directory(
    env: Gateway, run_cli: RunCli, tmp_path: Path
) -> None:
    source = await uploaded_source(run_cli, tmp_path, b"bytes")
    out = tmp_path / "missing" / "out.tar.gz"
    result = await run_cli("sources", "download", source["download_url"], "-o", str(out))
    assert (result.code, result.err) == (
        2,
        f"gateway: error: cannot write to {out.parent}: No such file or directory\n",
    )


async def test_download_into_a_directory(env: Gateway, run_cli: RunCli, tmp_path: Path) -> None:
    source = await uploaded_source(run_cli, tmp_path, b"bytes")
    result = await run_cli("sources", "download", "-q", source["download_url"], "-o", str(tmp_path))
    assert result.code == 0, result.err
    assert (tmp_path / f"{source['id']}.tar.gz").read_bytes() == b"bytes"


# --- the archive check, seen from the client ------------------------------------------------------

ENFORCE = {"sources": {"archive_check": "enforce"}}


@pytest.fixture
async def checking_api(
    start_gateway: StartGateway, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> FakeApi:
    fake = FakeApi(await start_gateway(ENFORCE))
    server: TestServer = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("")).rstrip("/")
    monkeypatch.setenv("GATEWAY_API_URL", fake.url)
    monkeypatch.setenv("GATEWAY_TOKEN", TOKEN)
    return fake


async def test_deploy_of_a_packed_tree_passes_the_check_and_prints_its_facts(
    checking_api: FakeApi, run_cli: RunCli, tmp_path: Path
) -> None:
    root = tmp_path / "tree"
    build_tree(root)  # nested dirs, long names, symbolic and hard links
    result = await run_cli("deploy", "--no-follow", "--app", "my-app", str(root))
    assert result.code == 0, result.err
    assert re.search(
        r"archive: \d+ entries \(\d+ files\), .* unpacked, at the top level", result.err
    )


async def test_sources_upload_prints_the_archive_facts(
    start_gateway: StartGateway, run_cli: RunCli, tmp_path: Path
) -> None:
    gateway = await start_gateway(ENFORCE)
    async with aiohttp.ClientSession() as http:
        source = await gateway.create_source(http)
    archive = make_archive(tmp_path / "a.tar.gz", {"app/a.py": b"x = 1\n", "app/b.py": b""})
    result = await run_cli("sources", "upload", source["upload_url"], str(archive))
    assert result.code == 0, result.err
    facts = {"entries": 2, "files": 2, "inflated_size": 10240, "root": "app/"}
    assert result.json()["archive"] == facts
    assert "archive: 2 entries (2 files), 10.0 KiB unpacked, all under app/" in result.err


@pytest.mark.parametrize("size", [100, 3 * 1024 * 1024])
async def test_sources_upload_of_a_refused_archive_says_why(
    start_gateway: StartGateway, run_cli: RunCli, tmp_path: Path, size: int
) -> None:
    gateway = await start_gateway(ENFORCE)
    async with aiohttp.ClientSession() as http:
        source = await gateway.create_source(http)
    archive = make_archive(tmp_path / "a.tar.gz", {"/etc/x": b"", "app/noise": os.urandom(size)})
    result = await run_cli("sources", "upload", source["upload_url"], str(archive))
    assert result.code != 0
    assert "the gateway refused the archive (422 archive_invalid: archive refused: entry" in (
        result.err
    )
