"""Streaming archives up and down: ``upload`` to a source's upload_url, ``download`` from its
download_url (used by ``gateway deploy`` and ``gateway sources``).

- uploads stream from disk in ``CHUNK_SIZE`` pieces with an explicit ``Content-Length`` and
  ``Expect: 100-continue``, so memory does not grow with the file and a refused upload (expired
  URL, too large) is refused before its body is sent;
- downloads stream to a temporary file beside the destination, check the ``X-Checksum-Sha256``
  header, and only then take the destination's name; a failed download leaves nothing behind.
- neither sends the API token: the URLs carry their own (and may live on another host).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO
from urllib.parse import urlsplit

import aiohttp
from tqdm import tqdm

from gateway.client.api import GZIP_MAGIC, json_object
from gateway.client.errors import CliError, error_from, network_errors, safe_url
from gateway.client.output import Reporter

# Read and write size for archives: big enough that a 300 MiB upload is ~1,200 reads, small enough
# that the client's memory stays a few of them (aiohttp pauses the generator while the socket's
# buffer is full).
CHUNK_SIZE = 256 * 1024
# How long an upload waits for 100 Continue before sending its body anyway: curl waits 1 s; a
# gateway answers at once, so this only matters behind a proxy that swallows the interim answer.
EXPECT_WAIT = 5.0


@dataclass(frozen=True)
class UploadAnswer:
    """The gateway's answer to a PUT: the source id, the stored size and its sha256, and what
    the gateway's archive check found (None when the check is off)."""

    id: str
    size: int
    sha256: str
    archive: dict[str, Any] | None = None


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str
    verified: bool


async def file_chunks(
    source: BinaryIO, size: int, digest: Any, bar: tqdm[Any], started: asyncio.Event
) -> AsyncIterator[bytes]:
    """Exactly ``size`` bytes of ``source`` from where it stands, read off the event loop.

    ``started`` is set when the body is first asked for (after 100 Continue). A file that shrinks
    meanwhile raises ``CliError``; one that grows is sent as it was when the upload started (the
    Content-Length is already on the wire)."""
    started.set()
    left = size
    while left:
        chunk = await asyncio.to_thread(source.read, min(CHUNK_SIZE, left))
        if not chunk:
            raise CliError("upload failed: the file shrank while it was being uploaded")
        left -= len(chunk)
        digest.update(chunk)
        bar.update(len(chunk))
        if not left:
            # The bar stays at 100% while the gateway stores and checks the end: say so.
            bar.set_description("upload (sent; the gateway is storing it)")
        yield chunk


class _NoContinue(Exception):
    """Neither 100 Continue nor an answer came within ``EXPECT_WAIT``."""


async def upload(
    session: aiohttp.ClientSession,
    url: str,
    source: BinaryIO,
    size: int,
    reporter: Reporter,
    *,
    label: str = "archive",
) -> UploadAnswer:
    """PUT ``size`` bytes of ``source`` (from where it stands) to the pre-authenticated ``url``.

    Streams with ``Expect: 100-continue``; if the server (or a proxy before it) neither answers
    nor says 100 Continue within ``EXPECT_WAIT``, sends the body without waiting, as curl does
    (aiohttp alone would wait forever). Checks that the sha256 the gateway computed is the one of
    the bytes sent."""
    action = f"uploading {label}"
    offset = await asyncio.to_thread(source.tell)
    try:
        return await _put(session, url, source, size, reporter, action, expect=True)
    except _NoContinue:
        reporter.debug(f"no 100 Continue after {EXPECT_WAIT:g} s: sending the body anyway")
        await asyncio.to_thread(source.seek, offset)
        return await _put(session, url, source, size, reporter, action, expect=False)


async def _put(
    session: aiohttp.ClientSession,
    url: str,
    source: BinaryIO,
    size: int,
    reporter: Reporter,
    action: str,
    *,
    expect: bool,
) -> UploadAnswer:
    digest = hashlib.sha256()
    started = asyncio.Event()
    headers = {"Content-Length": str(size), "Content-Type": "application/gzip"}
    reporter.debug(f"PUT {safe_url(url)} ({size} bytes)")

    async def send() -> dict[str, Any]:
        async with session.put(
            url,
            data=file_chunks(source, size, digest, bar, started),
            headers=headers,
            # The gateway answers 100 Continue only once the URL and the size are accepted, so a
            # refused upload costs one round trip, not the whole file.
            expect100=expect,
            # A streamed body cannot be sent twice: a redirect is reported, not followed.
            allow_redirects=False,
        ) as resp:
            reporter.debug(f"PUT {safe_url(url)} -> {resp.status}")
            if resp.status != 200:
                raise await error_from(resp, action, what="upload URL")
            return await json_object(resp, action)

    with reporter.bar(size, "upload") as bar, network_errors(action, url):
        request = asyncio.ensure_future(send())
        if expect:
            waiter = asyncio.ensure_future(started.wait())
            try:
                await asyncio.wait(
                    {request, waiter}, timeout=EXPECT_WAIT, return_when="FIRST_COMPLETED"
                )
            finally:
                waiter.cancel()
            if not request.done() and not started.is_set():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
                raise _NoContinue
        body = await request
    result = upload_answer(body, action)
    check_answer(result, size, digest.hexdigest(), action)
    return result


def check_answer(answer: UploadAnswer, size: int, sha256: str, action: str) -> None:
    """A ``CliError`` unless the gateway stored ``size`` bytes whose sha256 is ``sha256``."""
    if answer.size != size or answer.sha256 != sha256:
        raise CliError(
            f"{action} failed: the gateway stored {answer.size} bytes with sha256 {answer.sha256},"
            f" but {size} bytes with sha256 {sha256} were sent"
        )


def upload_answer(body: dict[str, Any], action: str) -> UploadAnswer:
    archive = body.get("archive")
    try:
        return UploadAnswer(
            str(body["id"]),
            int(body["size"]),
            str(body["sha256"]),
            archive if isinstance(archive, dict) else None,
        )
    except (KeyError, TypeError, ValueError):
        raise CliError(f"{action} failed: the gateway's answer lacks id, size or sha256") from None


# A download's extension, by the Content-Type it was served with; for a type that says nothing
# (application/octet-stream, none), by its first bytes.
EXTENSIONS = {
    "application/gzip": ".tar.gz",
    "application/x-gzip": ".tar.gz",
    "application/x-tar": ".tar",
    "application/zip": ".zip",
    "application/x-bzip2": ".tar.bz2",
    "application/x-xz": ".tar.xz",
    "application/zstd": ".tar.zst",
}
MAGIC_EXTENSIONS = ((GZIP_MAGIC, ".tar.gz"), (b"PK\x03\x04", ".zip"))
# The mode a new file gets before the umask, as open() and curl -o create them.
NEW_FILE_MODE = 0o666


def download_name(url: str, content_type: str | None, head: bytes) -> str:
    """``<source id><extension>`` for a download: the URL's last path segment, with the extension
    its Content-Type (or, failing that, its first bytes) calls for; none when neither says."""
    name = urlsplit(url).path.rstrip("/").rpartition("/")[2] or "archive"
    media = (content_type or "").split(";", 1)[0].strip().lower()
    extension = EXTENSIONS.get(media)
    if extension is None:
        extension = next((ext for magic, ext in MAGIC_EXTENSIONS if head.startswith(magic)), "")
    return name if not extension or name.endswith(extension) else f"{name}{extension}"


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (another thread may be
    creating a file meanwhile)."""
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/self/status", encoding="ascii") as status,
    ):
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


async def _receive(
    resp: aiohttp.ClientResponse, handle: IO[bytes], reporter: Reporter
) -> tuple[int, str, bytes]:
    """Write the body to ``handle``: its size, its sha256 and its first bytes."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with reporter.bar(resp.content_length, "download") as bar:
        async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
            await asyncio.to_thread(handle.write, chunk)
            if len(head) < len(GZIP_MAGIC) + 2:
                head += chunk[:4]
            digest.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return size, digest.hexdigest(), head


async def download(
    session: aiohttp.ClientSession,
    url: str,
    directory: Path,
    name: str | None,
    reporter: Reporter,
) -> DownloadResult:
    """GET ``url`` into ``directory/name`` (``name`` None: ``download_name``), checking the body
    against its ``X-Checksum-Sha256`` header.

    The bytes go to a temporary file in ``directory``, renamed only when the download is complete
    and its sha256 matches; on any failure the temporary file is removed and an existing file is
    left as it was. The file gets the mode a new file gets (0666 less the umask). Without a
    checksum header (a presigned object-store URL, say), the download is kept and ``verified``
    is False."""
    action = "downloading"
    mode = NEW_FILE_MODE & ~_umask()
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in the finally below)
            dir=directory, prefix=f".{name or 'download'}.", suffix=".part", delete=False
        )
    except OSError as exc:
        raise CliError(f"cannot write to {directory}: {exc.strerror}", exit_code=2) from None
    part = Path(handle.name)
    done = False
    try:
        reporter.debug(f"GET {safe_url(url)}")
        with network_errors(action, url):
            async with session.get(url) as resp:
                reporter.debug(f"GET {safe_url(url)} -> {resp.status}")
                if resp.status != 200:
                    raise await error_from(resp, action, what="download URL")
                expected = resp.headers.get("X-Checksum-Sha256", "").strip().lower() or None
                content_type = resp.headers.get("Content-Type")
                size, actual, head = await _receive(resp, handle, reporter)
        await asyncio.to_thread(handle.close)
        if expected is not None and actual != expected:
            raise CliError(
                f"{action} failed: sha256 mismatch: the server announced {expected}, the received"
                f" {size} bytes have {actual}; the partial file was deleted"
            )
        dest = directory / (name or download_name(url, content_type, head))
        os.chmod(part, mode)
        os.replace(part, dest)
        done = True
        return DownloadResult(dest, size, actual, verified=expected is not None)
    finally:
        handle.close()
        if not done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
