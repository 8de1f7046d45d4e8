"""The CLI's memory while it uploads and downloads large archives: it must stream from disk.

Run as ``python bench/bench_client_memory.py`` with the python of the project's .venv (it needs
the ``gateway`` package and moto). Starts a gateway (``gateway serve``, embedded in-memory S3 on
loopback) as a subprocess, then runs ``gateway sources upload`` and ``gateway sources download``
as subprocesses on files of 4 KiB, 64 MiB and 256 MiB, and takes each client's peak resident set
size from the kernel (``VmHWM``, read by the process itself as it exits). Prints one Markdown
section on stdout; exits 1 if a large transfer's peak exceeds the small one's by more than
``BOUND`` (a few part sizes). Loopback only, bounded in time (each step has a timeout; the whole
run takes well under a minute).
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
import time
import urllib.request
from pathlib import Path

MIB = 1024 * 1024
SIZES = (4 * 1024, 64 * MIB, 256 * MIB)
# The gateway's default part size; the client's growth is bounded by a few part sizes.
PART_SIZE = 8 * MIB
BOUND = 4 * PART_SIZE
TOKEN = "bench-token-0123456789"
STEP_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(directory: Path, port: int) -> Path:
    # The file moved is random bytes: it measures the client, not the server's archive check.
    config = directory / "gateway.yaml"
    config.write_text(
        f"""
server: {{host: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}"}}
auth: {{tokens: [{{name: bench, token: {TOKEN}, apps: ["*"]}}]}}
signing: {{secret_keys: ["bench-only-secret-key-0123456789"]}}
sources: {{max_size_bytes: {300 * MIB}, archive_check: off}}
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


# Runs the gateway command, then reports its peak RSS (see peak_rss.py).
PEAK_RSS = Path(__file__).with_name("peak_rss.py")


def measure(args: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    """Run ``gateway ARGS``; its peak RSS in bytes, its wall time, its stdout."""
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(PEAK_RSS), *args],
            env=env,
            capture_output=True,
            timeout=STEP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"timed out: gateway {' '.join(args[:2])}") from None
    elapsed = time.monotonic() - started
    err = proc.stderr.decode().strip()
    if proc.returncode != 0:
        raise SystemExit(f"gateway {' '.join(args[:2])} failed: {err}")
    label, kib = err.splitlines()[-1].split()
    assert label == "peak-rss-kib", err
    return int(kib) * 1024, elapsed, proc.stdout.decode()


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
        [sys.executable, "-m", "gateway", "serve", "--config", str(write_config(workdir, port))],
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
            _, _, created = measure(["sources", "create"], env)
            source = json.loads(created)
            up_peak, up_time, _ = measure(
                ["sources", "upload", "-q", source["upload_url"], str(path)],
                env,
            )
            out = workdir / "download.bin"
            down_peak, down_time, _ = measure(
                ["sources", "download", "-q", "-o", str(out), source["download_url"]],
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
        " loopback); its peak resident set size is the kernel's (`VmHWM`, read as the process"
        f" exits). The growth is against the 4 KiB run; the bound is {BOUND // MIB} MiB (four"
        " 8 MiB parts). The rate includes the process's start (about 0.5 s of Python imports).\n"
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
