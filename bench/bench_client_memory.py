"""The CLI's memory while it uploads and downloads large archives: it must stream from disk.

Run as ``python bench/bench_client_memory.py`` (from the repository, with its .venv active or
its python). Starts a gateway (``gateway serve``, embedded in-memory S3 on loopback) as a
subprocess, then runs ``gateway sources upload`` and ``gateway sources download`` as subprocesses
on files of 4 KiB, 64 MiB and 256 MiB, and reads each client's peak resident set size from the
kernel (``wait4``'s ``ru_maxrss``). Prints one Markdown section on stdout; exits 1 if a large
transfer's peak exceeds the small one's by more than ``BOUND`` (a few part sizes). Loopback only,
bounded in time (each step has a timeout; the whole run takes well under a minute).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

MIB = 1024 * 1024
SIZES = (4 * 1024, 64 * MIB, 256 * MIB)
# The gateway's default part size; "a few part sizes" is the bound on the client's growth.
PART_SIZE = 8 * MIB
BOUND = 4 * PART_SIZE
TOKEN = "bench-token-0123456789"
STEP_TIMEOUT = 300
# The gateway script beside this python (the project's .venv), else the one on PATH.
BIN = Path(sys.executable).parent
if not (BIN / "gateway").exists() and shutil.which("gateway"):
    BIN = Path(str(shutil.which("gateway"))).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(directory: Path, port: int) -> Path:
    config = directory / "gateway.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}"}}
auth: {{tokens: [{{name: bench, token: {TOKEN}, apps: ["*"]}}]}}
signing: {{secret_keys: ["bench-only-secret-key-0123456789"]}}
sources: {{max_size_bytes: {300 * MIB}}}
storage: {{bucket: bench, embedded: true, ensure_lifecycle: false}}
logging: {{level: warning}}
"""
    )
    return config


def wait_ready(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the gateway did not start in time")
        time.sleep(0.1)


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            f.write(chunk)
            left -= len(chunk)


def measure(argv: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    """Run ``argv``; its own peak RSS in bytes (``wait4``), its wall time, its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        # wait4, not Popen.wait: it returns this child's own rusage, peak RSS included.
        killer = threading.Timer(STEP_TIMEOUT, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv[1:3])} failed: {err.read().decode().strip()}")
        # ru_maxrss is in KiB on Linux.
        return usage.ru_maxrss * 1024, elapsed, out.read().decode()


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    )


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-client-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "GATEWAY_API_URL": url, "GATEWAY_TOKEN": TOKEN}
    server = subprocess.Popen(
        [str(BIN / "gateway"), "serve", "--config", str(write_config(workdir, port))],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    failed = False
    try:
        wait_ready(url, time.monotonic() + 60)
        base_up = base_down = 0
        for size in SIZES:
            path = workdir / "archive.bin"
            make_file(path, size)
            _, _, created = measure([str(BIN / "gateway"), "sources", "create"], env)
            source = json.loads(created)
            up_peak, up_time, _ = measure(
                [str(BIN / "gateway"), "sources", "upload", "-q", source["upload_url"], str(path)],
                env,
            )
            out = workdir / "download.bin"
            down_peak, down_time, _ = measure(
                [
                    str(BIN / "gateway"),
                    "sources",
                    "download",
                    "-q",
                    "-o",
                    str(out),
                    source["download_url"],
                ],
                env,
            )
            out.unlink()
            path.unlink()
            if size == SIZES[0]:
                base_up, base_down = up_peak, down_peak
            for direction, peak, seconds, base in (
                ("upload", up_peak, up_time, base_up),
                ("download", down_peak, down_time, base_down),
            ):
                growth = peak - base
                failed |= growth > BOUND
                rows.append(
                    f"| {format_size(size)} | {direction} | {peak / MIB:.1f} MiB"
                    f" | {growth / MIB:+.1f} MiB | {seconds:.2f} s"
                    f" | {rate(size, seconds)} |"
                )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    print("### Client memory: `gateway sources upload` and `download` of large archives\n")
    print("Command: `python bench/bench_client_memory.py`  ")
    print(f"Machine: {machine()}\n")
    print(
        "Each row is one `gateway` client process against a local gateway (embedded in-memory S3,"
        " loopback); its peak resident set size is the kernel's (`ru_maxrss`). The growth is"
        f" against the 4 KiB run; the bound is {BOUND // MIB} MiB (four 8 MiB parts). The rate"
        " includes the process's start (about 0.5 s of Python imports).\n"
    )
    print("| file | direction | peak RSS | growth | wall time | rate |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    verdict = "within" if not failed else "OVER"
    print(f"\nGrowth {verdict} the bound: the client streams from and to disk.")
    return 1 if failed else 0


def rate(size: int, seconds: float) -> str:
    return f"{size / MIB / seconds:.0f} MiB/s" if size >= MIB else "-"


def format_size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // 1024} KiB"


if __name__ == "__main__":
    sys.exit(main())
