"""The ``gateway`` command: serve, check-config, lifecycle; deploy and sources (the client, in
``cli``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from . import keys
from .app import create_app
from .cli import add_client_commands
from .config import Config, ConfigError, load_config
from .lifecycle import LifecycleConflict, ensure_lifecycle, get_rules
from .observability import configure_logging
from .storage import open_s3_client

log = logging.getLogger("gateway")


def _config_path(args: argparse.Namespace) -> str:
    path: str | None = getattr(args, "config", None) or os.environ.get("GATEWAY_CONFIG")
    if not path:
        raise ConfigError("", "no configuration: pass --config FILE or set GATEWAY_CONFIG")
    return path


def _with_embedded(stack: contextlib.ExitStack, config: Config) -> Config:
    """``config`` itself, or, with ``storage.embedded``, one using moto started in ``stack``."""
    if not config.storage.embedded:
        return config
    from .embedded import embedded_services  # moto is an optional extra

    return stack.enter_context(embedded_services(config))


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    configure_logging(config.logging.level, config.logging.json)
    with contextlib.ExitStack() as stack:
        serve(_with_embedded(stack, config))
    return 0


# After shutdown_timeout, what requests still running get to notice their cancellation.
CANCEL_GRACE_SECONDS = 1.0


def serve(config: Config) -> None:
    """Run the gateway until SIGINT/SIGTERM; in-flight transfers get ``shutdown_timeout``."""
    asyncio.run(_serve(create_app(config), config))


async def _serve(app: web.Application, config: Config) -> None:
    """Serve ``app``; on SIGTERM stop accepting, drain in-flight requests, then clean up.

    aiohttp's ``run_app`` waits for running handlers on shutdown, but (3.14) its first step closes
    every connection to further input, so an upload whose body is still arriving stalls until the
    timeout and is lost. Here the listening socket closes first, and the connections stay open
    until their requests are done or ``shutdown_timeout`` has passed."""
    server = config.server
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=CANCEL_GRACE_SECONDS
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, server.host, server.port)
        await site.start()
        log.info("serving on %s:%s, public URL %s", server.host, server.port, server.public_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

        inflight = app[keys.INFLIGHT]
        inflight.draining = True
        await site.stop()
        log.info(
            "shutting down: stopped accepting, %d requests in flight get up to %ss",
            inflight.count,
            server.shutdown_timeout,
        )
        try:
            async with asyncio.timeout(server.shutdown_timeout):
                await inflight.wait_idle()
        except TimeoutError:
            log.warning(
                "shutdown_timeout reached: cancelling %d requests still in flight", inflight.count
            )
    finally:
        await runner.cleanup()
    log.info("stopped")


def cmd_check_config(args: argparse.Namespace) -> int:
    load_config(args.file)
    print(f"{args.file}: OK")
    return 0


def cmd_lifecycle(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    with contextlib.ExitStack() as stack:
        config = _with_embedded(stack, config)
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
    except (BotoCoreError, ClientError, LifecycleConflict) as exc:
        print(f"gateway: storage error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
