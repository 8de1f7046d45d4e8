"""``gateway`` at a terminal (a pseudo-terminal from Python's ``pty``): progress whenever stderr is
a terminal, whatever stdout is; nothing with ``-q``; no control codes with ``NO_COLOR`` or off a
terminal; a summary and a table for a person, JSON for scripts; Ctrl-C at any moment one line and
exit 130. The script runs as users run it, against a real gateway whose deployments go to SQS on
moto (nobody takes them: they stay queued)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import TOKEN, CliGateway, Gateway
from .terminal import GATEWAY, on_terminal

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
async def env(cli_gateway: CliGateway) -> dict[str, str]:
    gateway: Gateway = (await cli_gateway())[0]
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "GATEWAY_APP")}
    return {**environ, "GATEWAY_API_URL": gateway.url, "GATEWAY_TOKEN": TOKEN}


def app_dir(tmp_path: Path) -> Path:
    root = tmp_path / "my-app"
    root.mkdir()
    (root / "main.py").write_text("print('hello')\n")
    # Incompressible, so the upload takes a few chunks.
    (root / "data.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    return root


async def test_progress_on_the_terminal_while_stdout_is_a_file(
    env: dict[str, str], tmp_path: Path
) -> None:
    argv = ["deploy", "--app", "my-app", "--no-follow", str(app_dir(tmp_path))]
    run = await on_terminal(argv, env=env)
    assert run.code == 0, run.terminal
    # tqdm's bars, redrawn with carriage returns: the packing and the upload, to 100%.
    assert re.search(r"pack: 100%\|[^\n]*3\.0\dM/3\.0\dM", run.terminal), run.terminal
    assert re.search(r"upload \(sent; the gateway is storing it\): 100%", run.terminal)
    assert "\r" in run.terminal
    # stdout, a file: the deployment as JSON, nothing else (today's scripts keep working).
    assert json.loads(run.out)["deployment"]["status"] == "queued"
    assert TOKEN not in run.terminal + run.out


async def test_quiet_shows_nothing(env: dict[str, str], tmp_path: Path) -> None:
    argv = ["deploy", "-q", "--app", "my-app", "--no-follow", str(app_dir(tmp_path))]
    run = await on_terminal(argv, env=env)
    assert (run.code, run.terminal) == (0, "")
    assert json.loads(run.out)["deployment"]["status"] == "queued"


@pytest.mark.parametrize("where", ["NO_COLOR", "not a terminal"])
async def test_no_control_codes(env: dict[str, str], tmp_path: Path, where: str) -> None:
    argv = [GATEWAY, "deploy", "--app", "my-app", "--no-follow", str(app_dir(tmp_path))]
    if where == "NO_COLOR":
        run = await on_terminal(argv[1:], env={**env, "NO_COLOR": "1"})
        code, err = run.code, run.terminal
    else:
        proc = await asyncio.to_thread(
            subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60
        )
        code, err = proc.returncode, proc.stderr
    assert code == 0, err
    assert "gateway: packed " in err  # what it did, in plain lines
    assert "%" not in err
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", err), repr(err)


async def test_a_summary_on_a_terminal_json_when_asked(env: dict[str, str], tmp_path: Path) -> None:
    root = app_dir(tmp_path)
    argv = ["deploy", "--app", "my-app", "--git-ref", "v0.0.2", "--no-follow", str(root)]
    run = await on_terminal(argv, env=env, stdout_on_terminal=True)
    assert run.code == 0, run.terminal
    match = re.search(
        rf"\ndeployment ({UUID}) of my-app: queued\n  duration -, git_ref v0.0.2, created"
        rf" \S+Z\n  output: gateway deployments output --app my-app ({UUID})\n$",
        run.terminal,
    )
    assert match is not None, run.terminal
    assert match.group(1) == match.group(2)
    assert "token" not in run.terminal  # no URL with its token, no JSON with links
    asked = await on_terminal([*argv, "-q", "--json"], env=env, stdout_on_terminal=True)
    assert json.loads(asked.terminal)["deployment"]["git_ref"] == "v0.0.2"


async def test_deployments_list_is_a_table_on_a_terminal(
    env: dict[str, str], tmp_path: Path
) -> None:
    root = app_dir(tmp_path)
    for ref in ("v1", "v2"):
        argv = ["deploy", "-q", "--app", "my-app", "--git-ref", ref, "--no-follow", str(root)]
        assert (await on_terminal(argv, env=env)).code == 0
    run = await on_terminal(
        ["deployments", "list"], env={**env, "GATEWAY_APP": "my-app"}, stdout_on_terminal=True
    )
    assert run.code == 0, run.terminal
    lines = run.terminal.splitlines()
    assert re.fullmatch(r"ID +STATUS +GIT_REF +PUSHER +CREATED +DURATION", lines[0])
    assert [line.split()[1:3] for line in lines[1:3]] == [["queued", "v2"], ["queued", "v1"]]
    assert lines[3] == "page 1 of 1 (2 deployments)"


async def test_waiting_while_queued_then_ctrl_c(env: dict[str, str], tmp_path: Path) -> None:
    """Following a deployment nobody starts: the terminal says what it waits for, with a clock;
    Ctrl-C typed on the terminal then prints one line (how to follow again) and exits 130."""
    argv = ["deploy", "--app", "my-app", str(app_dir(tmp_path))]
    run = await on_terminal(
        argv,
        env=env,
        ctrl_c_when=lambda shown: "waiting for the deployer to start it [00:01]" in shown,
    )
    assert run.code == 130, run.terminal
    assert "gateway: queued: waiting for the deployer to start it [00:00]" in run.terminal
    last = run.terminal.rstrip("\n").rsplit("\n", 1)[-1]
    assert re.fullmatch(
        rf"(\^C)?gateway: stopped following deployment ({UUID}) \(it goes on\); follow it again"
        rf" with: gateway deployments follow --app my-app ({UUID})",
        last.split("\r")[-1].split("\x1b[A")[-1],
    ), repr(last)
    assert "Traceback" not in run.terminal
    assert "interrupted" not in run.terminal


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.06, 0.1, 0.2, 0.4, 0.8])
def test_ctrl_c_during_start_up(delay: float) -> None:
    """Ctrl-C while the command starts (imports, parsing, the first connection): one line and
    130; before Python runs anything of ours, Python's own handling."""
    env = {**os.environ, "GATEWAY_API_URL": "http://10.255.255.1:9", "GATEWAY_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [GATEWAY, "deployments", "list", "--app", "my-app"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert out == b""
    if proc.returncode == 130:
        assert err == b"gateway: interrupted\n"
    else:
        # Before our code runs (Python starting, the script finding the package): Python's own
        # handling, killed by the signal or its traceback, never from inside the package.
        frames = re.findall(rb'File "([^"]+)"', err)
        assert not [f for f in frames if b"/gateway/" in f], err.decode()
