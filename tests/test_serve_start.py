"""What ``gateway serve`` says at start when the port or the public URL is wrong."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ServerConfig
from gateway.server.serve import public_url_mismatch

from .helpers import GATEWAY_BIN, ServeGateway, config_dict
from .ports import free_port


def test_a_busy_port_is_one_line_and_exit_2(
    moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config_dict(moto_endpoint, bucket, port)))
        done = subprocess.run(
            [str(GATEWAY_BIN), "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"gateway: port {port} is in use"
    assert "Traceback" not in done.stderr


def test_a_loopback_public_url_on_another_port_is_warned_at_start(
    serve_gateway: ServeGateway,
) -> None:
    other = free_port()
    served = serve_gateway({"server": {"public_url": f"http://localhost:{other}"}})
    served.stop()
    warnings = [r for r in served.log_records() if r["level"] == "warning"]
    assert any(f"is port {other} of this machine" in r["message"] for r in warnings), warnings


def server(public_url: str, port: int = 8080) -> ServerConfig:
    return ServerConfig(port=port, public_url=public_url)


@pytest.mark.parametrize(
    ("public_url", "warned"),
    [
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080/", False),
        ("http://127.0.0.1:9090", True),
        ("http://localhost", True),  # port 80
        ("https://[::1]:8443", True),
        ("http://127.0.0.2:8081", True),
        ("https://gw.example.com", False),  # behind a load balancer: any port is right
        ("http://10.0.0.5:9090", False),
    ],
)
def test_which_public_urls_are_warned(public_url: str, warned: bool) -> None:
    assert (public_url_mismatch(server(public_url)) is not None) is warned


def test_the_warning_names_both_ports() -> None:
    message: Any = public_url_mismatch(server("http://127.0.0.1:8080", port=9090))
    assert "port 8080 of this machine" in message and "listens on port 9090" in message
