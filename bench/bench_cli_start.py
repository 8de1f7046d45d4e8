"""How long the ``gateway`` command takes to start: ``--help``, ``deploy --help``, ``--version``
and a client command that stops at once (no API URL), each run as a user runs it (the installed
script, a fresh process), against the bare interpreter's start for reference.

The target (issue 22): ``gateway --help`` and ``gateway deploy --help`` under 0.3 s. What matters is
what a command imports: the parser only, never the server stack (aiobotocore, prometheus-client,
isal), and aiohttp only for a command that talks HTTP.

    python bench/bench_cli_start.py
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import machine

GATEWAY = str(Path(sys.executable).parent / "gateway")
RUNS = 15
TARGET_SECONDS = 0.3
COMMANDS = [
    ("python -c pass (the interpreter alone)", [sys.executable, "-c", "pass"]),
    ("gateway --help", [GATEWAY, "--help"]),
    ("gateway deploy --help", [GATEWAY, "deploy", "--help"]),
    ("gateway --version", [GATEWAY, "--version"]),
    ("gateway deployments list (no API URL: exits at once)", [GATEWAY, "deployments", "list"]),
]


def timings(argv: list[str]) -> tuple[list[float], list[float]]:
    """Wall times and CPU times (user + system, the child's own) of RUNS runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_APP"] = "my-app"
    wall, cpu = [], []
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    rows = []
    for label, argv in COMMANDS:
        runs, cpu = timings(argv)
        rows.append(
            f"| `{label}` | {statistics.median(runs):.3f} s | {min(runs):.3f} s"
            f" | {max(runs):.3f} s | {statistics.median(cpu):.3f} s |"
        )
        print(f"{label}: median {statistics.median(runs):.3f} s", file=sys.stderr)
    print("### CLI start: `gateway --help` and friends\n")
    print("Command: `python bench/bench_cli_start.py`  ")
    print(f"Machine: {machine()}\n")
    print(
        f"Wall time of {RUNS} runs of each command, a fresh process each (the installed script, as"
        f" a user runs it), on a machine shared with other work. Target: under"
        f" {TARGET_SECONDS} s for `--help`. The CPU column (user + system) is what the command"
        " itself costs; wall time above it is the machine's other work. A client command that"
        " talks HTTP loads aiohttp (about 0.2 s of CPU), never the server stack. Before issue 22"
        " every command imported both: 1.0 to 1.8 s.\n"
    )
    print("| command | median | fastest | slowest | CPU (median) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
