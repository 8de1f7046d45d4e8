"""The gateway's HTTP client: create sources and deployments, stream archives up and down.

Used by ``gateway deploy`` and ``gateway sources``. Every failure becomes a ``CliError`` whose
message is one line naming the cause, safe to print: it never contains the API token, and URLs in
it lose their query string (a source URL's ``?token=`` is a credential too).

Contracts the rest of the CLI relies on:
- the API token is sent as ``Authorization: Bearer`` to the API URL only, never to the upload or
  download URLs (they carry their own token and may live on another host);
- uploads stream from disk in ``CHUNK_SIZE`` pieces with an explicit ``Content-Length`` and
  ``Expect: 100-continue``, so memory does not grow with the file and a refused upload (expired
  URL, too large) is refused before its body is sent;
- downloads stream to a temporary file beside the destination, check the ``X-Checksum-Sha256``
  header, and only then take the destination's name; a failed download leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import aiohttp
from tqdm import tqdm

from gateway.client.errors import (
    MAX_ERROR_BODY,
    CliError,
    error_from,
    network_errors,
    safe_url,
)
from gateway.client.output import Reporter

# Read and write size for archives: big enough that a 300 MiB upload is ~1,200 reads, small enough
# that the client's memory stays a few of them (aiohttp pauses the generator while the socket's
# buffer is full).
CHUNK_SIZE = 256 * 1024
# Connecting gets a bound; reading does not get a total (a 300 MiB transfer on a slow line takes a
# while), only a bound on silence between two reads.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
USER_AGENT = f"sources-gateway-cli/0.1 aiohttp/{aiohttp.__version__}"
GZIP_MAGIC = b"\x1f\x8b"
# How long an upload waits for 100 Continue before sending its body anyway: curl waits 1 s; a
# gateway answers at once, so this only matters behind a proxy that swallows the interim answer.
EXPECT_WAIT = 5.0
# A 429 (auth.limits) is waited out and tried again this many times; a wait longer than
# MAX_RETRY_AFTER seconds is not worth sitting through: the error is shown at once.
MAX_RATE_LIMITED_RETRIES = 3
MAX_RETRY_AFTER = 60.0
# What a 429 without a readable Retry-After waits.
DEFAULT_RETRY_AFTER = 1.0


def retry_after(value: str | None) -> float:
    """The seconds a ``Retry-After`` field asks for (a number of seconds; an HTTP date, or
    nothing usable, gives ``DEFAULT_RETRY_AFTER``)."""
    try:
        seconds = float(value or "")
    except ValueError:
        return DEFAULT_RETRY_AFTER
    return seconds if 0 <= seconds < float("inf") else DEFAULT_RETRY_AFTER


def open_session() -> aiohttp.ClientSession:
    """The CLI's one session: bounded connect and idle-read times, no body decompression
    (an archive is downloaded as the bytes it is, gzip and all)."""
    return aiohttp.ClientSession(
        timeout=TIMEOUT, auto_decompress=False, headers={"User-Agent": USER_AGENT}
    )


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


async def _file_chunks(
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
            data=_file_chunks(source, size, digest, bar, started),
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
            return await _json_object(resp, action)

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
    result = _upload_answer(body, action)
    if result.size != size or result.sha256 != digest.hexdigest():
        raise CliError(
            f"{action} failed: the gateway stored {result.size} bytes with sha256 {result.sha256},"
            f" but {size} bytes with sha256 {digest.hexdigest()} were sent"
        )
    return result


def _upload_answer(body: dict[str, Any], action: str) -> UploadAnswer:
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


async def _json_object(resp: aiohttp.ClientResponse, action: str) -> dict[str, Any]:
    raw = await resp.content.read(MAX_ERROR_BODY)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise CliError(f"{action} failed: the answer ({resp.status}) is not a JSON object")
    return body


def default_download_name(url: str) -> str:
    """``<source id>.tar.gz`` for a gateway source URL, else the URL's last path segment."""
    name = urlsplit(url).path.rstrip("/").rpartition("/")[2] or "archive"
    return name if name.endswith((".tar.gz", ".tgz")) else f"{name}.tar.gz"


async def download(
    session: aiohttp.ClientSession, url: str, dest: Path, reporter: Reporter
) -> DownloadResult:
    """GET ``url`` into ``dest``, checking the body against its ``X-Checksum-Sha256`` header.

    The bytes go to a temporary file in ``dest``'s directory, renamed to ``dest`` only when the
    download is complete and its sha256 matches; on any failure the temporary file is removed and
    ``dest`` is left as it was. Without a checksum header (a server that does not send one, such as
    a presigned object-store URL), the download is kept and ``verified`` is False."""
    action = "downloading"
    directory = dest.parent
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in the finally below)
            dir=directory, prefix=f".{dest.name}.", suffix=".part", delete=False
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
                digest = hashlib.sha256()
                size = 0
                with reporter.bar(resp.content_length, "download") as bar:
                    async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
                        await asyncio.to_thread(handle.write, chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        bar.update(len(chunk))
        await asyncio.to_thread(handle.close)
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise CliError(
                f"{action} failed: sha256 mismatch: the server announced {expected}, the received"
                f" {size} bytes have {actual}; the partial file was deleted"
            )
        os.replace(part, dest)
        done = True
        return DownloadResult(dest, size, actual, verified=expected is not None)
    finally:
        handle.close()
        if not done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)


@dataclass(frozen=True)
class _RateLimited:
    """A 429: the seconds its ``Retry-After`` asks for, and the error to show if not retried."""

    wait: float
    error: CliError


class Api:
    """The authenticated part of the gateway's API, at ``api_url`` with ``token``."""

    def __init__(
        self, session: aiohttp.ClientSession, api_url: str, token: str, reporter: Reporter
    ) -> None:
        self._session = session
        self._base = api_url.rstrip("/")
        self._token = token
        self._reporter = reporter

    async def _post(self, path: str, action: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        """POST to the API; a 429 is waited out (its ``Retry-After``) and tried again, at most
        ``MAX_RATE_LIMITED_RETRIES`` times and never for longer than ``MAX_RETRY_AFTER``."""
        attempt = 0
        while isinstance(answer := await self._post_once(path, action, payload), _RateLimited):
            attempt += 1
            if attempt > MAX_RATE_LIMITED_RETRIES or answer.wait > MAX_RETRY_AFTER:
                raise answer.error
            wait = answer.wait
            self._reporter.info(f"{action}: the gateway asks to slow down; retrying in {wait:g} s")
            await asyncio.sleep(wait)
        return answer

    async def _post_once(
        self, path: str, action: str, payload: dict[str, Any] | None
    ) -> dict[str, Any] | _RateLimited:
        """The answer's JSON object, or what a 429 said (``CliError`` for any other failure)."""
        url = f"{self._base}{path}"
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            # Sent for the empty body too: the platform's examples always send it.
            "Content-Type": "application/json",
        }
        self._reporter.debug(f"POST {safe_url(url)}")
        with network_errors(action, url):
            async with self._session.post(
                url,
                headers=headers,
                # POST /v1/sources takes an empty body, as the public docs' curl sends it.
                data=json.dumps(payload) if payload is not None else b"",
                allow_redirects=False,
            ) as resp:
                self._reporter.debug(
                    f"POST {safe_url(url)} -> {resp.status}"
                    f" (request id {resp.headers.get('X-Request-ID', '-')})"
                )
                if resp.status in (301, 302, 303, 307, 308):
                    location = safe_url(resp.headers.get("Location", ""))
                    raise CliError(
                        f"{action} failed: the API answered a redirect ({resp.status}) to"
                        f" {location}; use that address as --api-url"
                    )
                if resp.status == 429:
                    error = await error_from(resp, action, what="URL")
                    return _RateLimited(retry_after(resp.headers.get("Retry-After")), error)
                if resp.status not in (200, 201):
                    raise await error_from(resp, action, what="URL")
                return await _json_object(resp, action)

    async def create_source(self) -> dict[str, Any]:
        """``POST /v1/sources``: the new source, with ``upload_url`` and ``download_url``."""
        action = "creating a source"
        body = await self._post("/v1/sources", action, None)
        source = _source_object(body)
        if not isinstance(source.get("upload_url"), str) or not isinstance(
            source.get("download_url"), str
        ):
            raise CliError(f"{action} failed: the answer has no upload_url and download_url")
        return body

    async def create_deployment(
        self, app: str, download_url: str, git_ref: str | None
    ) -> dict[str, Any]:
        """``POST /v1/apps/{app}/deployments`` with the archive's ``download_url``: the answer."""
        deployment: dict[str, str] = {"download_url": download_url}
        if git_ref is not None:
            deployment["git_ref"] = git_ref
        path = f"/v1/apps/{quote(app, safe='')}/deployments"
        return await self._post(path, f"deploying {app}", {"deployment": deployment})


def _source_object(body: dict[str, Any]) -> dict[str, Any]:
    # The documented bare object, or the platform's {"source": {...}}: the gateway answers both.
    inner = body.get("source")
    return inner if isinstance(inner, dict) else body


def urls_of_source(body: dict[str, Any]) -> tuple[str, str]:
    """(upload_url, download_url) of a create-source answer, in either of its shapes."""
    source = _source_object(body)
    return str(source["upload_url"]), str(source["download_url"])


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC
