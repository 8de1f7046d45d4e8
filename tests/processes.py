"""``gateway serve`` as a real process: the CLI, its logging setup and its signal handling."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The console script of the venv the tests run in: the one `pip install -e .` made.
GATEWAY_BIN = Path(sys.executable).parent / "gateway"
START_TIMEOUT = 30.0


@dataclass
class ServedGateway:
    """A ``gateway serve --config FILE`` child process and where its stderr goes."""

    proc: subprocess.Popen[bytes]
    url: str
    config_path: Path
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """Every line of the log, each parsed as JSON (a line that is not JSON fails the test)."""
        records = []
        for line in self.log_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
        return records

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def serve(
    config: dict[str, Any],
    workdir: Path,
    name: str = "gateway",
    env: dict[str, str] | None = None,
) -> ServedGateway:
    """Write ``config`` as YAML, start ``gateway serve`` on it, return once ``/healthz`` is 200."""
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = workdir / f"{name}.log"
    server = config["server"]
    url = f"http://{server['host']}:{server['port']}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(GATEWAY_BIN), "serve", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    served = ServedGateway(proc, url, config_path, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited {proc.returncode}:\n{served.log_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return served
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"gateway did not start:\n{served.log_text()}")
        time.sleep(0.1)
