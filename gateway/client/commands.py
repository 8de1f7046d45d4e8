"""The client commands of ``gateway``: ``deploy``, ``deployments list|show|output|follow`` and
``sources create|upload|download``.

Each command prints its result (JSON) on stdout and everything else (progress, what it did, errors)
on stderr, so ``gateway deploy ... > deployment.json`` keeps the file clean. A failure is one line,
``gateway: error: <what failed>: <cause>``, and a non-zero exit: 2 for a usage problem (missing
token or API URL, unreadable PATH), 1 for everything that failed on the way (refused, unreachable,
checksum mismatch, a deployment that ended in an error status), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from gateway.client.api import (
    Api,
    default_download_name,
    download,
    is_gzip,
    open_session,
    upload,
    urls_of_source,
)
from gateway.client.errors import EXIT_USAGE, CliError
from gateway.client.follow import DeploymentsApi, Printer, follow_to_end
from gateway.client.output import Reporter, describe_archive, format_size
from gateway.client.packing import PackError, pack_directory
from gateway.ids import APP_NAME, APP_NAME_RULE
from gateway.redaction import redact

API_URL_ENV = "GATEWAY_API_URL"
TOKEN_ENV = "GATEWAY_TOKEN"
EXIT_INTERRUPTED = 130


def _api_settings(args: argparse.Namespace) -> tuple[str, str]:
    """The API URL and token from the options, else the environment; a usage error if missing."""
    api_url = (args.api_url or os.environ.get(API_URL_ENV) or "").strip()
    token = (args.token or os.environ.get(TOKEN_ENV) or "").strip()
    if not api_url:
        raise CliError(f"no API URL: pass --api-url URL or set {API_URL_ENV}", exit_code=EXIT_USAGE)
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"the API URL must be an absolute http(s) URL, not {api_url!r}", exit_code=EXIT_USAGE
        )
    if not token:
        raise CliError(f"no API token: pass --token TOKEN or set {TOKEN_ENV}", exit_code=EXIT_USAGE)
    return api_url, token


def _reporter(args: argparse.Namespace) -> Reporter:
    return Reporter(quiet=args.quiet, verbose=args.verbose)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2), flush=True)


async def _interruptible(command: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Await ``command``; Ctrl-C (SIGINT) cancels it and raises ``KeyboardInterrupt`` once it has
    cleaned up (a partial download removed, connections closed).

    ``asyncio.run`` handles SIGINT with a plain signal handler, which runs only when the main
    thread next wakes: when the kernel hands the signal to another thread (a worker writing the
    download, tqdm's monitor) while the loop waits on a stalled connection, nothing would happen
    until the server spoke again. The loop's own handler also wakes the loop, whichever thread
    the signal lands on."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None or threading.current_thread() is not threading.main_thread():
        await command()  # signals reach the main thread's loop only (in tests, a thread runs us)
        return
    interrupted = False

    def on_interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()
        # A second Ctrl-C while cleaning up stops at once (Python's default handler is back).
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        await command()
    except asyncio.CancelledError:
        if interrupted and task.uncancel() == 0:
            raise KeyboardInterrupt from None
        raise
    finally:
        if not interrupted:
            loop.remove_signal_handler(signal.SIGINT)


def _run(args: argparse.Namespace, command: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``command`` in a fresh event loop; a failure prints one line and gives its exit code."""
    secrets = tuple(s for s in (getattr(args, "token", None), os.environ.get(TOKEN_ENV)) if s)
    try:
        asyncio.run(_interruptible(command))
    except CliError as exc:
        print(f"gateway: error: {redact(exc.message, secrets)}", file=sys.stderr, flush=True)
        return exc.exit_code
    except OSError as exc:
        # A local failure nobody turned into a CliError (disk full while packing, say).
        where = f" ({exc.filename})" if exc.filename else ""
        message = redact(f"{exc.strerror or exc}{where}", secrets)
        print(f"gateway: error: {message}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("gateway: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


def _report_archive(reporter: Reporter, archive: dict[str, Any] | None) -> None:
    line = describe_archive(archive)
    if line is not None:
        reporter.info(line)


def _open_archive(
    path: Path, stack: contextlib.ExitStack, reporter: Reporter
) -> tuple[BinaryIO, int]:
    """The archive to upload for PATH, positioned at its start, and its size.

    A directory is packed into an anonymous temporary file (gone when closed, even after a crash);
    a file must be gzip-compressed, since the platform only deploys ``tar.gz`` archives."""
    if path.is_dir():
        archive: BinaryIO = stack.enter_context(
            tempfile.TemporaryFile(prefix="gateway-deploy-", suffix=".tar.gz")  # noqa: SIM115
        )
        try:
            result = pack_directory(
                path, archive, on_skip=lambda name, why: reporter.info(f"skipped {name}: {why}")
            )
        except PackError as exc:
            raise CliError(f"packing {path} failed: {exc}", exit_code=EXIT_USAGE) from None
        size = archive.tell()
        archive.seek(0)
        excluded = f", {result.ignore_file} honoured" if result.ignore_file else ""
        reporter.info(
            f"packed {path}: {result.files} files, {format_size(result.bytes)}"
            f" -> {format_size(size)} compressed{excluded}"
        )
        return archive, size
    try:
        archive = stack.enter_context(path.open("rb"))
    except FileNotFoundError:
        raise CliError(f"{path}: no such file or directory", exit_code=EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=EXIT_USAGE) from None
    if not is_gzip(path):
        raise CliError(
            f"{path} is not a gzip-compressed archive: pass a .tar.gz file or a directory",
            exit_code=EXIT_USAGE,
        )
    return archive, os.fstat(archive.fileno()).st_size


def _open_file(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", exit_code=EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=EXIT_USAGE) from None


def _destination(output: str | None, url: str) -> Path:
    """Where a download goes: ``-o FILE``, inside ``-o DIR``, or ``<source id>.tar.gz`` here."""
    dest = Path(output or default_download_name(url))
    return dest / default_download_name(url) if dest.is_dir() else dest


def cmd_deploy(args: argparse.Namespace) -> int:
    """``gateway deploy --app APP [--git-ref REF] PATH``: pack, create a source, upload, deploy."""

    async def deploy() -> None:
        # The server's rule, checked before anything is packed or uploaded.
        if not APP_NAME.fullmatch(args.app):
            raise CliError(f"app name {args.app!r} {APP_NAME_RULE}", exit_code=EXIT_USAGE)
        api_url, token = _api_settings(args)
        reporter = _reporter(args)
        path = Path(args.path)
        with contextlib.ExitStack() as stack:
            # Packing reads the whole tree: off the event loop, though nothing else runs yet.
            archive, size = await asyncio.to_thread(_open_archive, path, stack, reporter)
            async with open_session() as session:
                api = Api(session, api_url, token, reporter)
                source = await api.create_source()
                upload_url, download_url = urls_of_source(source)
                reporter.info(f"created source {source.get('id', '')}".rstrip())
                uploaded = await upload(
                    session, upload_url, archive, size, reporter, label=str(path)
                )
                reporter.info(f"uploaded {format_size(uploaded.size)}, sha256 {uploaded.sha256}")
                _report_archive(reporter, uploaded.archive)
                answer = await api.create_deployment(args.app, download_url, args.git_ref)
                deployment_id = str(answer.get("deployment", {}).get("id", ""))
                reporter.info(f"deployment {deployment_id} of {args.app}: queued")
                if not args.no_follow:
                    deployments = DeploymentsApi(session, api_url, token, reporter)
                    await _follow(args, deployments, deployment_id)
                    return
        _print_json(answer)

    return _run(args, deploy)


async def _follow(args: argparse.Namespace, api: DeploymentsApi, deployment_id: str) -> None:
    """Follow to the final status, print the deployment; a ``CliError`` unless success."""
    printer = Printer(sys.stderr, quiet=args.quiet)
    answer, failure = await follow_to_end(api, args.app, deployment_id, printer)
    _print_json(answer)
    if failure is not None:
        raise failure


def cmd_deployments(args: argparse.Namespace) -> int:
    """``gateway deployments list|show|output|follow --app APP [ID]``."""

    async def run() -> None:
        api_url, token = _api_settings(args)
        async with open_session() as session:
            api = DeploymentsApi(session, api_url, token, _reporter(args))
            path = f"/{quote(args.id, safe='')}" if getattr(args, "id", None) else ""
            if args.deployments_command == "list":
                query = f"?page={args.page}&per_page={args.per_page}"
                _print_json(await api.get_json(args.app, query, "listing deployments"))
            elif args.deployments_command == "show":
                _print_json(await api.get_json(args.app, path, "reading the deployment"))
            elif args.deployments_command == "output":
                text = await api.get_text(args.app, f"{path}/output", "reading the output")
                sys.stdout.write(text)
                sys.stdout.flush()
            else:
                await _follow(args, api, args.id)

    return _run(args, run)


def cmd_sources_create(args: argparse.Namespace) -> int:
    """``gateway sources create``: print the new source (upload_url, download_url, ...) as JSON."""

    async def create() -> None:
        api_url, token = _api_settings(args)
        reporter = _reporter(args)
        async with open_session() as session:
            _print_json(await Api(session, api_url, token, reporter).create_source())

    return _run(args, create)


def cmd_sources_upload(args: argparse.Namespace) -> int:
    """``gateway sources upload URL FILE``: stream FILE to an upload URL, print the answer."""

    async def upload_file() -> None:
        reporter = _reporter(args)
        path = Path(args.file)
        with await asyncio.to_thread(_open_file, path) as source:
            size = os.fstat(source.fileno()).st_size
            async with open_session() as session:
                result = await upload(session, args.url, source, size, reporter, label=str(path))
        reporter.info(f"uploaded {format_size(result.size)}, sha256 verified ({result.sha256})")
        _report_archive(reporter, result.archive)
        answer: dict[str, Any] = {"id": result.id, "size": result.size, "sha256": result.sha256}
        if result.archive is not None:
            answer["archive"] = result.archive
        _print_json(answer)

    return _run(args, upload_file)


def cmd_sources_download(args: argparse.Namespace) -> int:
    """``gateway sources download URL [-o FILE]``: stream to FILE, checking the sha256."""

    async def download_file() -> None:
        reporter = _reporter(args)
        dest = await asyncio.to_thread(_destination, args.output, args.url)
        async with open_session() as session:
            result = await download(session, args.url, dest, reporter)
        if result.verified:
            size = format_size(result.size)
            reporter.info(f"downloaded {size} to {dest}, sha256 verified ({result.sha256})")
        else:
            # Said even with --quiet: the user asked for a checked download and did not get one.
            print(
                f"gateway: warning: downloaded {format_size(result.size)} to {dest}, sha256"
                f" {result.sha256} NOT verified: the server sent no X-Checksum-Sha256 header",
                file=sys.stderr,
                flush=True,
            )

    return _run(args, download_file)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no messages but errors"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log each request (tokens are never shown)"
    )


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-url", help=f"the gateway's base URL (default: ${API_URL_ENV})")
    parser.add_argument(
        "--token",
        help=f"API token (default: ${TOKEN_ENV}; prefer the variable: options show in ps)",
    )


def _add_deployments(sub: Any) -> None:
    parser = sub.add_parser("deployments", help="list, show and follow an app's deployments")
    commands = parser.add_subparsers(dest="deployments_command", required=True)
    for name, help_text in (
        ("list", "the app's deployments, newest first, as JSON"),
        ("show", "one deployment with its current status, as JSON"),
        ("output", "a deployment's output so far, as text"),
        ("follow", "print a deployment's output as it comes, until its final status"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--app", required=True, help="the app")
        if name == "list":
            command.add_argument("--page", type=int, default=1, help="page number (from 1)")
            command.add_argument("--per-page", type=int, default=30, help="at most 100")
        else:
            command.add_argument("id", metavar="ID", help="the deployment's id")
        _api_options(command)
        _output_options(command)
        command.set_defaults(func=cmd_deployments)


def add_client_commands(sub: Any) -> None:
    """Register ``deploy`` and ``sources`` on the ``gateway`` command's subparsers."""
    deploy = sub.add_parser(
        "deploy",
        help="deploy a .tar.gz archive or a directory to an app",
        description="Pack PATH if it is a directory, create a source, upload the archive with a"
        " progress bar and create a deployment from it; print the deployment as JSON.",
    )
    deploy.add_argument("--app", required=True, help="the app to deploy")
    deploy.add_argument(
        "--git-ref", metavar="REF", help="a label for this version of the code (optional)"
    )
    deploy.add_argument("path", metavar="PATH", help="a .tar.gz archive or a directory to pack")
    deploy.add_argument(
        "--no-follow",
        action="store_true",
        help="return once the deployment is queued instead of following it to its end",
    )
    _api_options(deploy)
    _output_options(deploy)
    deploy.set_defaults(func=cmd_deploy)
    _add_deployments(sub)

    sources = sub.add_parser("sources", help="create sources, upload and download archives")
    sources_sub = sources.add_subparsers(dest="sources_command", required=True)

    create = sources_sub.add_parser("create", help="create a source; print its URLs as JSON")
    _api_options(create)
    _output_options(create)
    create.set_defaults(func=cmd_sources_create)

    up = sources_sub.add_parser("upload", help="upload FILE to a source's upload_url")
    up.add_argument("url", metavar="URL", help="the source's upload_url")
    up.add_argument("file", metavar="FILE", help="the archive to upload")
    _output_options(up)
    up.set_defaults(func=cmd_sources_upload)

    down = sources_sub.add_parser(
        "download", help="download a source's archive and verify its sha256"
    )
    down.add_argument("url", metavar="URL", help="the source's download_url")
    down.add_argument(
        "-o", "--output", metavar="FILE", help="where to write it (default: <source id>.tar.gz)"
    )
    _output_options(down)
    down.set_defaults(func=cmd_sources_download)
