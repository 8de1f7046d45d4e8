"""The tus servers bench_resumable.py measures beside the gateway, on the same moto, all driven by
the same client: tusd v2.9.1 with its S3 store (built by ``go install`` into the tools cache) and
@tus/server 2.x with @tus/s3-store (npm, pinned in bench/peers), sent to by tus-js-client 4.3.1
(bench/peers/tus_send.cjs). ``bench/ensure-tools`` installs them; a missing one is reported as
such in the figures, never measured as something else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from harness import BENCH, CREDENTIALS, Server, free_port, process

TOOLS = Path(
    os.environ.get("GATEWAY_TOOLS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sources-gateway"
)
PEERS = BENCH / "peers"
NODE_MODULES = TOOLS / "bench-peers" / "node_modules"
TUSD = TOOLS / "bin" / "tusd"
TUSD_VERSION = "v2.9.1"
# Both peers cut the upload into the gateway's part size, for a like-for-like figure.
PART_SIZE = 8 * 1024 * 1024
SEND_TIMEOUT = 600


def _aws_env() -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": "us-east-1",
        "NODE_PATH": str(NODE_MODULES),
    }


def missing() -> dict[str, str]:
    """What cannot be measured here, and why."""
    why: dict[str, str] = {}
    node = shutil.which("node") is not None and (NODE_MODULES / "tus-js-client").is_dir()
    if not node:
        why["client"] = f"node or bench/peers' packages missing ({NODE_MODULES})"
    if not TUSD.is_file():
        why["tusd"] = f"no {TUSD} (bench/ensure-tools builds it where Go is installed)"
    if not (NODE_MODULES / "@tus" / "server").is_dir():
        why["@tus/server"] = f"not installed in {NODE_MODULES}"
    return why


@contextlib.contextmanager
def tusd(endpoint: str, bucket: str) -> Iterator[Server]:
    port = free_port()
    argv = [str(TUSD), "-host", "127.0.0.1", "-port", str(port), "-base-path", "/files/"]
    argv += ["-s3-bucket", bucket, "-s3-endpoint", endpoint, "-s3-part-size", str(PART_SIZE)]
    with _environment(), process("tusd", argv, port) as server:
        yield server


@contextlib.contextmanager
def tus_node_server(endpoint: str, bucket: str) -> Iterator[Server]:
    port = free_port()
    argv = ["node", str(PEERS / "tus_server.cjs"), str(port), endpoint, bucket]
    with _environment(), process("@tus/server", argv, port) as server:
        yield server


@contextlib.contextmanager
def _environment() -> Iterator[None]:
    """The peers read their S3 credentials from the environment they are started in."""
    saved = dict(os.environ)
    os.environ.update(_aws_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def send(endpoint: str, size: int, chunk: int) -> float:
    """Seconds tus-js-client takes to upload ``size`` bytes to ``endpoint`` (creation to the
    last answer; ``chunk`` 0: one PATCH)."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(PEERS / "tus_send.cjs"),
        endpoint,
        str(size),
        str(chunk),
        env=_aws_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), SEND_TIMEOUT)
    lines = out.decode().strip().splitlines()
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": err.decode()[-500:]}
    if not result.get("ok"):
        raise RuntimeError(f"tus-js-client to {endpoint}: {result.get('error')}")
    return float(result["seconds"])
