"""The server's commands: ``serve``, ``check-config`` and ``lifecycle``.

The server stack (aiohttp, aiobotocore, prometheus-client...) is imported by the command that runs,
not by this module: ``gateway --help`` and the client commands build their parser from here."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import LifecycleRuleOutputTypeDef

    from gateway.config import Config


def _config_path(args: argparse.Namespace) -> str:
    from gateway.config import ConfigError

    path: str | None = getattr(args, "config", None) or os.environ.get("GATEWAY_CONFIG")
    if not path:
        raise ConfigError("", "no configuration: pass --config FILE or set GATEWAY_CONFIG")
    return path


def _with_embedded(stack: contextlib.ExitStack, config: Config) -> Config:
    """``config`` itself, or, with ``storage.embedded``, one using moto started in ``stack``."""
    if not config.storage.embedded:
        return config
    from gateway.server.adapters.embedded import embedded_services  # moto is an optional extra

    return stack.enter_context(embedded_services(config))


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.server.observability.logs import configure_logging
    from gateway.server.serve import PortInUse, serve
    from gateway.server.workers import with_workers

    config = with_workers(load_config(_config_path(args)), args.workers)
    configure_logging(config.logging.level, config.logging.json, secrets=config.secrets())
    with contextlib.ExitStack() as stack:
        try:
            return serve(_with_embedded(stack, config))
        except PortInUse as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return 2


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config

    if args.file and args.config and args.file != args.config:
        raise ConfigError("", f"two configuration files given: {args.file} and {args.config}")
    path = args.file or _config_path(args)
    load_config(path)
    print(f"{path}: OK")
    return 0


EMBEDDED_LIFECYCLE = (
    "gateway: storage.embedded is true: that store lives inside `gateway serve`, in memory, and "
    "is gone when it stops; serve sets its lifecycle rule itself (storage.ensure_lifecycle). "
    "`gateway lifecycle` is for a real bucket: point storage at it."
)


def cmd_lifecycle(args: argparse.Namespace) -> int:
    from gateway.config import load_config

    config = load_config(_config_path(args))
    if config.storage.embedded:
        # Starting a throwaway store here would show or change rules nobody uses.
        print(EMBEDDED_LIFECYCLE, file=sys.stderr)
        return 2
    import asyncio

    rules = asyncio.run(_lifecycle(config, apply=args.action == "apply"))
    print(json.dumps({"bucket": config.storage.bucket, "rules": rules}, indent=2, default=str))
    return 0


async def _lifecycle(config: Config, *, apply: bool) -> list[LifecycleRuleOutputTypeDef]:
    from gateway.server.adapters.aws import open_s3_client
    from gateway.server.adapters.lifecycle import (
        abort_after_days,
        ensure_lifecycle,
        get_rules,
        rules_besides_sources,
    )

    async with open_s3_client(config.storage) as s3:
        if apply:
            changed = await ensure_lifecycle(
                s3, config.storage, rules_besides_sources(config), abort_after_days(config)
            )
            print(
                "lifecycle rules " + ("applied" if changed else "already in place"),
                file=sys.stderr,
            )
        return await get_rules(s3, config.storage.bucket)


def add_server_commands(sub: Any) -> None:
    serve_p = sub.add_parser("serve", help="serve the gateway")
    serve_p.add_argument("--config", help="YAML configuration (default: $GATEWAY_CONFIG)")
    serve_p.add_argument(
        "--workers",
        type=int,
        help="processes serving the port, each a full instance (default: server.workers)",
    )
    serve_p.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", nargs="?", help="YAML configuration (or --config FILE)")
    check.add_argument("--config", help="YAML configuration (default: $GATEWAY_CONFIG)")
    check.set_defaults(func=cmd_check_config)

    life = sub.add_parser("lifecycle", help="show or apply the bucket's lifecycle rule")
    life.add_argument("action", choices=["apply", "show"])
    life.add_argument("--config", help="YAML configuration (default: $GATEWAY_CONFIG)")
    life.set_defaults(func=cmd_lifecycle)
