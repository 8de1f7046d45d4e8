"""The client commands' command line: ``deploy``, ``deployments ...`` and ``sources ...``.

Only argparse here: each command's module (aiohttp, tqdm, packing) is imported when the command
runs, so that ``gateway --help`` and ``gateway deploy --help`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

API_URL_ENV = "GATEWAY_API_URL"
TOKEN_ENV = "GATEWAY_TOKEN"
APP_ENV = "GATEWAY_APP"

Command = Callable[[argparse.Namespace], int]


def _lazy(module: str, name: str) -> Command:
    """The command ``name`` of ``gateway.client.<module>``, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        command: Command = getattr(importlib.import_module(f"gateway.client.{module}"), name)
        return command(args)

    run.__name__ = name
    return run


def _output_options(parser: argparse.ArgumentParser, *, json_switch: bool = False) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no messages but errors"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log each request (tokens are never shown)"
    )
    if json_switch:
        parser.add_argument(
            "--json",
            action="store_true",
            help="print the API's JSON object (the default when stdout is not a terminal)",
        )


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help=f"the gateway's base URL (default: ${API_URL_ENV})")
    parser.add_argument(
        "--token",
        help=f"API token (default: ${TOKEN_ENV}; prefer the variable: options show in ps)",
    )


def _app_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--app", help=f"{help_text} (default: ${APP_ENV})")


def _add_deploy(sub: Any) -> None:
    deploy = sub.add_parser(
        "deploy",
        help="deploy a .tar.gz archive, a directory or an archive URL to an app",
        description="Check the token and the app, pack PATH if it is a directory, create a"
        " source, upload the archive, create a deployment from it and follow it to its end."
        " On a terminal, progress goes to stderr and a summary to stdout; otherwise (or with"
        " --json) stdout gets the deployment as JSON.",
    )
    _app_option(deploy, "the app to deploy")
    deploy.add_argument(
        "--git-ref", metavar="REF", help="a label for this version of the code (optional)"
    )
    deploy.add_argument(
        "path", metavar="PATH", nargs="?", help="a .tar.gz archive or a directory to pack"
    )
    deploy.add_argument(
        "--source-url",
        metavar="URL",
        help="deploy the archive at URL (already online: nothing is packed or uploaded)",
    )
    deploy.add_argument(
        "--no-follow",
        action="store_true",
        help="return once the deployment is queued instead of following it to its end",
    )
    deploy.add_argument(
        "--dry-run",
        action="store_true",
        help="list what PATH would be packed into, with sizes and the total; send nothing",
    )
    _api_options(deploy)
    _output_options(deploy, json_switch=True)
    deploy.set_defaults(func=_lazy("deploy", "cmd_deploy"))


def _add_deployments(sub: Any) -> None:
    parser = sub.add_parser("deployments", help="list, show and follow an app's deployments")
    commands = parser.add_subparsers(dest="deployments_command", required=True)
    for name, help_text in (
        ("list", "the app's deployments, newest first (a table on a terminal)"),
        ("show", "one deployment with its current status"),
        ("output", "a deployment's output so far, as text"),
        ("follow", "print a deployment's output as it comes, until its final status"),
    ):
        command = commands.add_parser(name, help=help_text)
        _app_option(command, "the app")
        if name == "list":
            command.add_argument("--page", type=int, default=1, help="page number (from 1)")
            command.add_argument("--per-page", type=int, default=30, help="at most 100")
        else:
            command.add_argument("id", metavar="ID", help="the deployment's id")
        _api_options(command)
        _output_options(command, json_switch=name != "output")
        command.set_defaults(func=_lazy("commands", "cmd_deployments"))


def _add_sources(sub: Any) -> None:
    sources = sub.add_parser("sources", help="create sources, upload and download archives")
    sources_sub = sources.add_subparsers(dest="sources_command", required=True)

    create = sources_sub.add_parser("create", help="create a source; print its URLs as JSON")
    _api_options(create)
    _output_options(create)
    create.set_defaults(func=_lazy("commands", "cmd_sources_create"))

    up = sources_sub.add_parser("upload", help="upload FILE to a source's upload_url")
    up.add_argument("url", metavar="URL", help="the source's upload_url")
    up.add_argument("file", metavar="FILE", help="the archive to upload")
    _output_options(up)
    up.set_defaults(func=_lazy("commands", "cmd_sources_upload"))

    down = sources_sub.add_parser(
        "download", help="download a source's archive and verify its sha256"
    )
    down.add_argument("url", metavar="URL", help="the source's download_url")
    down.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write it (default: <source id> and the extension its type calls for)",
    )
    _output_options(down)
    down.set_defaults(func=_lazy("commands", "cmd_sources_download"))


def add_client_commands(sub: Any) -> None:
    """Register ``deploy``, ``deployments`` and ``sources`` on ``gateway``'s subparsers."""
    _add_deploy(sub)
    _add_deployments(sub)
    _add_sources(sub)
