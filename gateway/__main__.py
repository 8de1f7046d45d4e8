"""The ``gateway`` command: dispatch to the server's commands (serve, check-config, lifecycle)
and the client's (deploy, sources)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from botocore.exceptions import BotoCoreError, ClientError

from gateway.client.commands import add_client_commands
from gateway.config import ConfigError
from gateway.server.adapters.lifecycle import LifecycleConflict
from gateway.server.commands import add_server_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="sources-gateway")
    version = metadata.version("sources-gateway")
    parser.add_argument("--version", action="version", version=f"gateway {version}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_server_commands(sub)
    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError, LifecycleConflict) as exc:
        print(f"gateway: storage error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
