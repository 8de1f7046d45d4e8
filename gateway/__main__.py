"""The ``gateway`` command: dispatch to the server's commands (serve, check-config, lifecycle)
and the client's (deploy, deployments, sources).

Only argparse and the parsers load here: a command's modules (aiohttp, the server stack) load
when it runs, so ``gateway --help`` answers at once (bench/bench_cli_start.py measures it). A
client command (``gateway deploy ...``) builds the client's parsers only: no server module loads
in it. Ctrl-C at any moment, start-up included, prints one line and exits 130.
"""

from __future__ import annotations

# Nothing but sys at the top: until main's try is entered, Ctrl-C would print a traceback, so the
# import of this module (by the installed script) must take no time.
import sys

# typing itself takes milliseconds to import; mypy reads any TYPE_CHECKING as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any

EXIT_INTERRUPTED = 130
SERVER_COMMANDS = frozenset({"serve", "check-config", "lifecycle"})
CLIENT_COMMANDS = frozenset({"deploy", "deployments", "sources"})


def build_parser(server: bool = True) -> argparse.ArgumentParser:
    """Every command's parser; with ``server`` false, the client's only."""
    import argparse

    from gateway.client.cli import add_client_commands

    class VersionAction(argparse.Action):
        """``--version``, reading the installed version only when asked (importlib.metadata is
        slow to load)."""

        def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
            super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

        def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
            from importlib import metadata

            print(f"gateway {metadata.version('sources-gateway')}")
            parser.exit()

    parser = argparse.ArgumentParser(prog="gateway", description="sources-gateway")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    if server:
        from gateway.server.commands import add_server_commands

        add_server_commands(sub)
    add_client_commands(sub)
    return parser


def _run_server_command(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from gateway.config import ConfigError
    from gateway.server.adapters.lifecycle import LifecycleConflict

    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError, LifecycleConflict) as exc:
        print(f"gateway: storage error: {exc}", file=sys.stderr)
        return 1
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        given = sys.argv[1:] if argv is None else list(argv)
        client_only = bool(given) and given[0] in CLIENT_COMMANDS
        args = build_parser(server=not client_only).parse_args(given)
        if args.command in SERVER_COMMANDS:
            return _run_server_command(args)
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("gateway: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
