"""The ``gateway`` command: serve, check-config, lifecycle; deploy and sources (the client, in
``cli``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from .app import create_app
from .cli import add_client_commands
from .config import Config, ConfigError, load_config
from .lifecycle import ensure_lifecycle, get_rules
from .observability import configure_logging
from .storage import open_s3_client

log = logging.getLogger("gateway")


def _config_path(args: argparse.Namespace) -> str:
    path: str | None = getattr(args, "config", None) or os.environ.get("GATEWAY_CONFIG")
    if not path:
        raise ConfigError("", "no configuration: pass --config FILE or set GATEWAY_CONFIG")
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    configure_logging(config.logging.level, config.logging.json)
    with contextlib.ExitStack() as stack:
        if config.storage.embedded:
            from .embedded import embedded_services

            config = stack.enter_context(embedded_services(config))
        serve(config)
    return 0


def serve(config: Config) -> None:
    """Run the gateway until SIGINT/SIGTERM; in-flight transfers get ``shutdown_timeout``."""
    log.info(
        "serving on %s:%s, public URL %s",
        config.server.host,
        config.server.port,
        config.server.public_url,
    )
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        shutdown_timeout=config.server.shutdown_timeout,
        access_log=None,
        print=None,
        handle_signals=True,
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    load_config(args.file)
    print(f"{args.file}: OK")
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    with contextlib.ExitStack() as stack:
        if config.storage.embedded:
            from .embedded import embedded_services

            config = stack.enter_context(embedded_services(config))
        rules = asyncio.run(_lifecycle(config, apply=args.action == "apply"))
    print(json.dumps({"bucket": config.storage.bucket, "rules": rules}, indent=2, default=str))
    return 0


async def _lifecycle(config: Config, *, apply: bool) -> list[dict[str, Any]]:
    async with open_s3_client(config.storage) as s3:
        if apply:
            changed = await ensure_lifecycle(s3, config.storage)
            print(
                "lifecycle rule " + ("applied" if changed else "already in place"), file=sys.stderr
            )
        return await get_rules(s3, config.storage.bucket)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="sources-gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve_p = sub.add_parser("serve", help="serve the gateway")
    serve_p.add_argument("--config", help="YAML configuration (default: $GATEWAY_CONFIG)")
    serve_p.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    life = sub.add_parser("lifecycle", help="show or apply the bucket's lifecycle rule")
    life.add_argument("action", choices=["apply", "show"])
    life.add_argument("--config", help="YAML configuration (default: $GATEWAY_CONFIG)")
    life.set_defaults(func=cmd_lifecycle)

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
    except (BotoCoreError, ClientError) as exc:
        print(f"gateway: storage error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
