"""py-spy on the gateway while it serves downloads, or checks archive uploads, in a loop.

    python bench/profile.py download OUT.txt [SECONDS]
    python bench/profile.py archive OUT.txt [SECONDS]

Writes py-spy's collapsed stacks (``--format raw``, one line per stack with its sample count) of
the gateway process to OUT.txt, and prints the functions with the most samples, inclusive and
on top of the stack. Needs py-spy (in the dev extras) and the rights to trace (root).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import bench_cpu_per_gib as bench
from harness import create_bucket, gateway, s3_server


def start_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy (from this venv, else PATH) recording ``pid`` for ``seconds``, into ``out``."""
    here = Path(sys.executable).with_name("py-spy")
    argv = [str(here) if here.exists() else "py-spy", "record", "-p", str(pid), "-r", "200"]
    argv += ["--format", "raw", "-o", str(out), "-d", str(int(seconds)), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL)


async def loop(kind: str, out: Path, seconds: float) -> None:
    s3_kind = "moto" if kind == "download" else "sink"
    mode = "off" if kind == "download" else "enforce"
    with s3_server(s3_kind) as s3, contextlib.ExitStack() as stack:
        bucket = create_bucket(s3.url)
        gw = stack.enter_context(gateway(s3.url, bucket, archive_check=mode))
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            if kind == "download":
                data = bytes(bench.OBJECT_SIZE)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    data = bench.source_tree(Path(tmp))
            source = await bench.upload(http, gw, data)
            spy = start_spy(gw.proc.pid, out, seconds)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and spy.poll() is None:
                if kind == "download":
                    await bench.fetch(http, source["download_url"], len(data))
                else:
                    await bench.upload(http, gw, data)
            spy.wait()


def summary(out: Path, top: int = 40) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        total += n
        leaf[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples", "", "on top of the stack:"]
    lines += [f"{100 * n / total:5.1f}% {f}" for f, n in leaf.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}% {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    kind, out = argv[0], Path(argv[1])
    seconds = float(argv[2]) if len(argv) > 2 else 20.0
    asyncio.run(loop(kind, out, seconds))
    print(summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
