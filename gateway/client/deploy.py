"""``gateway deploy``: check, pack, upload, deploy, follow; or list (``--dry-run``), or deploy an
archive already online (``--source-url``).

Everything that can refuse the deployment is asked before anything is packed: the app name and
the git_ref against the server's rules, then the token and its right to deploy the app
(``GET /v1/apps/{app}``), so a refused deployment never costs an upload. When creating the
deployment fails after the upload, the message says so and gives the command that deploys the
uploaded archive without sending it again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import aiohttp

from gateway.client.api import Api, is_gzip, open_session, source_object, urls_of_source
from gateway.client.errors import EXIT_USAGE, CliError
from gateway.client.follow import DeploymentsApi, Printer, follow_to_end
from gateway.client.output import Reporter, describe_archive, format_size
from gateway.client.packing import PackError, PackResult, pack_directory, scan
from gateway.client.render import deployment_summary, print_json, wants_json
from gateway.client.resume import file_sha256, upload_resumable
from gateway.client.resume_state import ResumeFile
from gateway.client.runner import api_settings, app_of, reporter_of, run
from gateway.ids import git_ref_errors

# A source reused by a resumed deploy must still have this long to live: its download_url is
# what the deployment is created with.
SOURCE_MARGIN = 60


class _Stopped(Exception):
    """Packing was asked to stop (Ctrl-C): the worker thread ends at its next piece."""


def _check_arguments(args: argparse.Namespace) -> None:
    """The usage errors ``deploy`` can find alone, before anything else."""
    if args.dry_run:
        if args.path is None:
            raise CliError("--dry-run lists what PATH would be packed into: pass PATH", exit_code=2)
        return
    if (args.path is None) == (args.source_url is None):
        raise CliError(
            "pass PATH (an archive or a directory) or --source-url URL, one of them",
            exit_code=EXIT_USAGE,
        )
    if args.git_ref and (problems := git_ref_errors(args.git_ref)):
        raise CliError(f"git_ref {args.git_ref!r} {'; '.join(problems)}", exit_code=EXIT_USAGE)
    if args.source_url is not None:
        parts = urlsplit(args.source_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError("--source-url must be an absolute http(s) URL", exit_code=EXIT_USAGE)


def _pack(path: Path, out: BinaryIO, reporter: Reporter, stop: threading.Event) -> PackResult:
    """Pack the directory ``path`` into ``out``, with a bar counting the bytes read (run in a
    worker thread; ``stop`` ends it early)."""
    found = scan(path, on_skip=lambda name, why: reporter.info(f"skipped {name}: {why}"))

    def count(size: int) -> None:
        if stop.is_set():
            raise _Stopped
        bar.update(size)

    with reporter.bar(found.bytes, "pack") as bar:
        return pack_directory(path, out, scanned=found, on_bytes=count)


def _open_archive(
    path: Path, stack: contextlib.ExitStack, reporter: Reporter, stop: threading.Event
) -> tuple[BinaryIO, int]:
    """The archive to upload for PATH, positioned at its start, and its size.

    A directory is packed into an anonymous temporary file (gone when closed, even after a crash);
    a file must be gzip-compressed, since the platform only deploys ``tar.gz`` archives."""
    if path.is_dir():
        archive: BinaryIO = stack.enter_context(
            tempfile.TemporaryFile(prefix="gateway-deploy-", suffix=".tar.gz")  # noqa: SIM115
        )
        try:
            result = _pack(path, archive, reporter, stop)
        except PackError as exc:
            raise CliError(f"packing {path} failed: {exc}", exit_code=EXIT_USAGE) from None
        size = archive.tell()
        archive.seek(0)
        honoured = f", {', '.join(result.ignore_files)} honoured" if result.ignore_files else ""
        reporter.info(
            f"packed {path}: {result.files} files, {format_size(result.bytes)}"
            f" -> {format_size(size)} compressed{honoured}"
        )
        return archive, size
    archive = stack.enter_context(_open_file(path))
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
        raise CliError(f"{path}: no such file or directory", exit_code=EXIT_USAGE) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=EXIT_USAGE) from None


async def _archive(
    path: Path, stack: contextlib.ExitStack, reporter: Reporter
) -> tuple[BinaryIO, int]:
    """``_open_archive`` off the event loop; Ctrl-C stops the packing thread, not just the wait."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(_open_archive, path, stack, reporter, stop)
    except asyncio.CancelledError:
        stop.set()
        raise


def _deploy_again_hint(
    args: argparse.Namespace, app: str, source: dict[str, Any]
) -> tuple[str, ...]:
    _, download_url = urls_of_source(source)
    inner = source_object(source)
    until = inner.get("expires_at")
    command = ["gateway", "deploy", "--app", app]
    if args.git_ref:
        command += ["--git-ref", args.git_ref]
    command += ["--source-url", download_url]
    lives = f"until {until}" if isinstance(until, str) else "for the sources' ttl_seconds"
    return (
        f"the archive is uploaded (source {inner.get('id', '?')}); its URL works {lives}.",
        "deploy it without uploading it again with:",
        shlex.join(command),
    )


async def _upload(
    args: argparse.Namespace,
    session: aiohttp.ClientSession,
    api: Api,
    stack: contextlib.ExitStack,
    reporter: Reporter,
    api_url: str,
) -> dict[str, Any]:
    """Pack (or open) PATH, create a source (or take the one an interrupted run of this archive
    left), upload: the create-source answer."""
    path = Path(args.path)
    archive, size = await _archive(path, stack, reporter)
    sha256 = await asyncio.to_thread(file_sha256, archive, size)
    pending = ResumeFile("deploy", api_url.rstrip("/"), sha256)
    source = await _source_for(api, pending, reporter)
    upload_url, _ = urls_of_source(source)
    uploaded = await upload_resumable(
        session, upload_url, archive, size, reporter, label=str(path), sha256=sha256
    )
    await asyncio.to_thread(pending.remove)
    reporter.info(f"uploaded {format_size(uploaded.size)}, sha256 {uploaded.sha256}")
    line = describe_archive(uploaded.archive)
    if line is not None:
        reporter.info(line)
    return source


async def _source_for(api: Api, pending: ResumeFile, reporter: Reporter) -> dict[str, Any]:
    """The source an interrupted upload of this archive went to, while its URLs live long
    enough to deploy from; else a new one, remembered in ``pending`` until it is uploaded."""
    saved = await asyncio.to_thread(pending.load)
    if saved is not None and isinstance(saved.get("source"), dict):
        source: dict[str, Any] = saved["source"]
        reporter.info(f"resuming the upload to source {source_object(source).get('id', '?')}")
        return source
    source = await api.create_source()
    inner = source_object(source)
    reporter.info(f"created source {inner.get('id', '')}".rstrip())
    until = _epoch(inner.get("expires_at")) - SOURCE_MARGIN
    if until > time.time():
        why = await asyncio.to_thread(pending.save, {"source": source, "expires_at": until})
        if why is not None:
            reporter.warning(f"cannot keep the upload's state, so Ctrl-C loses it: {why}")
    return source


def _epoch(value: Any) -> float:
    """An RFC 3339 time in epoch seconds; 0 when it is not one."""
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


async def _deploy(args: argparse.Namespace) -> None:
    _check_arguments(args)
    app = app_of(args)
    api_url, token = api_settings(args)
    reporter = reporter_of(args)
    with contextlib.ExitStack() as stack:
        async with open_session() as session:
            api = Api(session, api_url, token, reporter)
            await api.check_app(app)  # 401, 403 here: nothing packed or sent yet
            source: dict[str, Any] | None = None
            if args.source_url is not None:
                download_url = args.source_url
            else:
                source = await _upload(args, session, api, stack, reporter, api_url)
                _, download_url = urls_of_source(source)
            try:
                answer = await api.create_deployment(app, download_url, args.git_ref)
            except CliError as exc:
                if source is not None:
                    exc.hint = _deploy_again_hint(args, app, source)
                raise
            deployment_id = str(answer.get("deployment", {}).get("id", ""))
            reporter.info(f"deployment {deployment_id} of {app}: queued")
            if not args.no_follow:
                deployments = DeploymentsApi(session, api_url, token, reporter)
                printer = Printer(sys.stderr, quiet=args.quiet)
                waiting = "queued: waiting for the deployer to start it"
                answer, failure = await follow_to_end(
                    deployments, app, deployment_id, printer, waiting
                )
                _print_deployment(args, answer, app)
                if failure is not None:
                    raise failure
                return
    _print_deployment(args, answer, app)


def _print_deployment(args: argparse.Namespace, answer: dict[str, Any], app: str) -> None:
    if wants_json(args):
        print_json(answer)
    else:
        sys.stdout.write(deployment_summary(answer, app))
        sys.stdout.flush()


def _listing(path: Path, reporter: Reporter) -> dict[str, Any]:
    """What deploying PATH would send: ``{"entries": [{"name", "type", "size"}], "files",
    "bytes"}``, for a directory as packing would store it, for an archive as it holds it."""
    entries: list[dict[str, Any]] = []
    if path.is_dir():
        try:
            found = scan(path, on_skip=lambda name, why: reporter.info(f"skipped {name}: {why}"))
        except PackError as exc:
            raise CliError(f"packing {path} failed: {exc}", exit_code=EXIT_USAGE) from None
        for e in found.entries:
            kind = "link" if e.path.is_symlink() else "directory" if e.path.is_dir() else "file"
            entries.append({"name": e.name, "type": kind, "size": e.size})
        if found.ignore_files:
            reporter.info(f"honoured: {', '.join(found.ignore_files)}")
    else:
        with _open_file(path) as raw:
            try:
                with tarfile.open(fileobj=raw, mode="r:*") as tar:
                    for m in tar:
                        kind = "file" if m.isfile() else "directory" if m.isdir() else "link"
                        entries.append({"name": m.name, "type": kind, "size": m.size})
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise CliError(
                    f"{path} is not a readable tar archive: {exc}", exit_code=2
                ) from None
    files = [e for e in entries if e["type"] == "file"]
    return {"entries": entries, "files": len(files), "bytes": sum(e["size"] for e in files)}


async def _dry_run(args: argparse.Namespace) -> None:
    reporter = reporter_of(args)
    listing = await asyncio.to_thread(_listing, Path(args.path), reporter)
    if wants_json(args):
        print_json(listing)
        return
    lines = []
    for entry in listing["entries"]:
        suffix = "/" if entry["type"] == "directory" else ""
        size = format_size(entry["size"]) if entry["type"] == "file" else ""
        lines.append(f"{size:>10}  {entry['name']}{suffix}")
    lines.append(
        f"{listing['files']} files, {format_size(listing['bytes'])} in all (before compression);"
        " nothing was packed or sent"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def cmd_deploy(args: argparse.Namespace) -> int:
    """``gateway deploy [--app APP] [--git-ref REF] (PATH | --source-url URL)``."""

    async def deploy() -> None:
        if args.dry_run:
            _check_arguments(args)
            await _dry_run(args)
        else:
            await _deploy(args)

    return run(args, deploy)
