"""The client commands ``deployments list|show|output|follow`` and ``sources
create|upload|download`` (``deploy`` is in ``deploy.py``).

Each command prints its result on stdout and everything else (progress, what it did, errors) on
stderr, so ``gateway ... > result.json`` keeps the file clean. Results are the API's JSON, or on a
terminal (without ``--json``) a table or a summary for a person.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from gateway.client.api import Api, open_session
from gateway.client.errors import EXIT_USAGE, CliError
from gateway.client.follow import DeploymentsApi, Printer, follow_to_end
from gateway.client.output import Reporter, describe_archive, format_size
from gateway.client.render import deployment_summary, deployments_table, print_json, wants_json
from gateway.client.resume import upload_resumable
from gateway.client.runner import api_settings, app_of, reporter_of, run
from gateway.client.transfer import download
from gateway.paths import DEPLOYMENT, DEPLOYMENT_OUTPUT, DEPLOYMENTS, fill


def _report_archive(reporter: Reporter, archive: dict[str, Any] | None) -> None:
    line = describe_archive(archive)
    if line is not None:
        reporter.info(line)


def _open_file(path: Path) -> Any:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", exit_code=EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=EXIT_USAGE) from None


def _show(args: argparse.Namespace, answer: dict[str, Any], app: str) -> None:
    if wants_json(args):
        print_json(answer)
    else:
        sys.stdout.write(deployment_summary(answer, app))
        sys.stdout.flush()


async def _follow(
    args: argparse.Namespace, api: DeploymentsApi, app: str, deployment_id: str
) -> None:
    """Follow to the final status, print the deployment; a ``CliError`` unless success."""
    printer = Printer(sys.stderr, quiet=args.quiet)
    answer, failure = await follow_to_end(api, app, deployment_id, printer)
    _show(args, answer, app)
    if failure is not None:
        raise failure


def cmd_deployments(args: argparse.Namespace) -> int:
    """``gateway deployments list|show|output|follow [--app APP] [ID]``."""

    async def run_it() -> None:
        app = app_of(args)
        deployment_id = getattr(args, "id", None)
        if deployment_id is not None and not deployment_id.strip():
            raise CliError("the deployment id is empty", exit_code=EXIT_USAGE)
        api_url, token = api_settings(args)
        async with open_session() as session:
            api = DeploymentsApi(session, api_url, token, reporter_of(args))
            command = args.deployments_command
            if command == "list":
                query = f"?page={args.page}&per_page={args.per_page}"
                path = fill(DEPLOYMENTS, app=app) + query
                body = await api.get_json(path, "listing deployments")
                if wants_json(args):
                    print_json(body)
                else:
                    sys.stdout.write(deployments_table(body))
            elif command == "show":
                path = fill(DEPLOYMENT, app=app, id=deployment_id or "")
                _show(args, await api.get_json(path, "reading the deployment"), app)
            elif command == "output":
                path = fill(DEPLOYMENT_OUTPUT, app=app, id=deployment_id or "")
                sys.stdout.write(await api.get_text(path, "reading the output"))
            else:
                assert deployment_id is not None
                await _follow(args, api, app, deployment_id)
            sys.stdout.flush()

    return run(args, run_it)


def cmd_sources_create(args: argparse.Namespace) -> int:
    """``gateway sources create``: print the new source (upload_url, download_url, ...) as JSON."""

    async def create() -> None:
        api_url, token = api_settings(args)
        reporter = reporter_of(args)
        async with open_session() as session:
            print_json(await Api(session, api_url, token, reporter).create_source())

    return run(args, create)


def cmd_sources_upload(args: argparse.Namespace) -> int:
    """``gateway sources upload URL FILE``: stream FILE to an upload URL (resumably where the
    gateway allows it), print the answer."""

    async def upload_file() -> None:
        reporter = reporter_of(args)
        path = Path(args.file)
        with await asyncio.to_thread(_open_file, path) as source:
            size = os.fstat(source.fileno()).st_size
            async with open_session() as session:
                result = await upload_resumable(
                    session, args.url, source, size, reporter, label=str(path)
                )
        reporter.info(f"uploaded {format_size(result.size)}, sha256 verified ({result.sha256})")
        _report_archive(reporter, result.archive)
        answer: dict[str, Any] = {"id": result.id, "size": result.size, "sha256": result.sha256}
        if result.archive is not None:
            answer["archive"] = result.archive
        print_json(answer)

    return run(args, upload_file)


def _target(output: str | None) -> tuple[Path, str | None]:
    """Where a download goes: (directory, file name), the name None when the download decides
    it (``-o DIR`` or no ``-o``)."""
    if output is None:
        return Path("."), None
    dest = Path(output)
    if dest.is_dir():
        return dest, None
    return dest.parent, dest.name


def cmd_sources_download(args: argparse.Namespace) -> int:
    """``gateway sources download URL [-o FILE]``: stream to FILE, checking the sha256."""

    async def download_file() -> None:
        reporter = reporter_of(args)
        directory, name = await asyncio.to_thread(_target, args.output)
        async with open_session() as session:
            result = await download(session, args.url, directory, name, reporter)
        size = format_size(result.size)
        if result.verified:
            reporter.info(f"downloaded {size} to {result.path}, sha256 verified ({result.sha256})")
        else:
            # Said even with --quiet: the user asked for a checked download and did not get one.
            reporter.warning(
                f"downloaded {size} to {result.path}, sha256 {result.sha256} NOT verified: the"
                " server sent no X-Checksum-Sha256 header"
            )

    return run(args, download_file)
