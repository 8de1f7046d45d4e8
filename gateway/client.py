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
import errno
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
from tqdm import tqdm

# Read and write size for archives: big enough that a 300 MiB upload is ~1,200 reads, small enough
# that the client's memory stays a few of them (aiohttp pauses the generator while the socket's
# buffer is full).
CHUNK_SIZE = 256 * 1024
# The most of an error answer we read: platform error bodies are a few hundred bytes.
MAX_ERROR_BODY = 64 * 1024
# A server message is quoted in our one line; longer ones are cut.
MAX_MESSAGE = 300
# Connecting gets a bound; reading does not get a total (a 300 MiB transfer on a slow line takes a
# while), only a bound on silence between two reads.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
USER_AGENT = f"sources-gateway-cli/0.1 aiohttp/{aiohttp.__version__}"
GZIP_MAGIC = b"\x1f\x8b"
# How long an upload waits for 100 Continue before sending its body anyway: curl waits 1 s; a
# gateway answers at once, so this only matters behind a proxy that swallows the interim answer.
EXPECT_WAIT = 5.0

EXIT_FAILURE = 1
EXIT_USAGE = 2

_URL_TOKEN = re.compile(r"([?&]token=)[^&\s'\"]+")


class CliError(Exception):
    """A failure to report to the user as one line, and the process's exit code."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every URL token and each of ``secrets`` replaced by ``***``."""
    text = _URL_TOKEN.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def safe_url(url: str) -> str:
    """``url`` without its query string and fragment (which may carry a token), for messages."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def describe_error(status: int, body: Any, *, what: str) -> str:
    """The cause of an error answer, in words a user acts on (``what``: the URL's kind)."""
    message = ""
    code = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            message = body["error"]
        if isinstance(body.get("code"), str):
            code = body["code"]
    detail = f": {_one_line(message)}" if message else ""
    if status == 401:
        return f"the API token was refused (401{detail}); check --token or GATEWAY_TOKEN"
    if status == 403 and code == "token_expired":
        return f"the {what} has expired (403 token_expired); create a new source and start again"
    if status == 403 and code == "token_invalid":
        return (
            f"the {what} is not valid (403 token_invalid): its token is damaged or is not for this"
            " operation; copy the whole URL, its token included"
        )
    if status == 403:
        return f"forbidden (403{detail})"
    if status == 404:
        resource = body.get("resource") if isinstance(body, dict) else None
        if resource == "source":
            return "not found (404): nothing has been uploaded to this source yet"
        if resource == "route" and what != "URL":
            return f"no such endpoint (404): the {what} is not a source URL of this gateway"
        if resource == "route":
            return (
                "no such endpoint (404): check --api-url or GATEWAY_API_URL (the gateway's base"
                " URL, without /v1)"
            )
        return f"{resource} not found (404)" if resource else f"not found (404{detail})"
    if status == 413:
        return f"the archive is too large (413{detail})"
    if status == 422:
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, dict) and errors:
            fields = "; ".join(
                f"{field}: {', '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
                for field, msgs in errors.items()
            )
            return f"validation failed (422): {_one_line(fields)}"
        return f"validation failed (422{detail})"
    if status >= 500:
        return f"server error ({status}{detail})"
    return f"unexpected answer ({status}{detail})"


async def _error_from(resp: aiohttp.ClientResponse, action: str, *, what: str) -> CliError:
    raw = await resp.content.read(MAX_ERROR_BODY)
    body: Any
    try:
        body = json.loads(raw)
    except ValueError:
        body = None  # a proxy's HTML page, say: the status alone says more in one line
    request_id = resp.headers.get("X-Request-ID")
    suffix = f" [request id {request_id}]" if request_id else ""
    return CliError(f"{action} failed: {describe_error(resp.status, body, what=what)}{suffix}")


@contextlib.contextmanager
def network_errors(action: str, url: str) -> Iterator[None]:
    """Turn aiohttp's and the OS's connection failures into a ``CliError`` naming the host."""
    where = safe_url(url)
    try:
        yield
    except CliError:
        raise
    except aiohttp.ClientConnectorCertificateError:
        raise CliError(f"{action} failed: the TLS certificate of {where} was refused") from None
    except aiohttp.ClientConnectorError as exc:
        host = f"{exc.host}:{exc.port}"
        if isinstance(exc.os_error, socket.gaierror):
            cause = f"cannot resolve the host name {exc.host}"
        elif exc.os_error.errno == errno.ECONNREFUSED:
            cause = f"connection refused by {host}; is the gateway running at {where}?"
        else:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            cause = f"cannot connect to {host} ({reason})"
        raise CliError(f"{action} failed: {cause}") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise CliError(f"{action} failed: {where} did not answer in time") from None
    except aiohttp.ClientPayloadError:
        raise CliError(
            f"{action} failed: the connection broke before the end of the data"
        ) from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        raise CliError(f"{action} failed: the connection to {where} was lost") from None
    except aiohttp.InvalidURL:
        raise CliError(f"{action} failed: not a valid URL: {where}", exit_code=EXIT_USAGE) from None
    except aiohttp.ClientError as exc:
        raise CliError(f"{action} failed: {type(exc).__name__}") from None


def open_session() -> aiohttp.ClientSession:
    """The CLI's one session: bounded connect and idle-read times, no body decompression
    (an archive is downloaded as the bytes it is, gzip and all)."""
    return aiohttp.ClientSession(
        timeout=TIMEOUT, auto_decompress=False, headers={"User-Agent": USER_AGENT}
    )


class Reporter:
    """Where the CLI's words go: informational lines and progress bars on stderr."""

    def __init__(
        self, *, quiet: bool = False, verbose: bool = False, stream: IO[str] | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.verbose = verbose and not quiet

    @property
    def progress_enabled(self) -> bool:
        """Bars only for a person watching: not with --quiet, and only when both stdout and
        stderr are terminals (the issue's rule: output captured or piped means a script)."""
        return not self.quiet and sys.stdout.isatty() and self.stream.isatty()

    def info(self, message: str) -> None:
        if not self.quiet:
            print(f"gateway: {message}", file=self.stream, flush=True)

    def debug(self, message: str) -> None:
        if self.verbose:
            print(f"gateway: debug: {redact(message)}", file=self.stream, flush=True)

    def bar(self, total: int | None, description: str) -> tqdm[Any]:
        return tqdm(
            total=total,
            desc=description,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.stream,
            disable=not self.progress_enabled,
            leave=True,
            dynamic_ncols=True,
        )


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class UploadResult:
    """The gateway's answer to a PUT: the source id, the stored size and its sha256."""

    id: str
    size: int
    sha256: str


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
) -> UploadResult:
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
) -> UploadResult:
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
                raise await _error_from(resp, action, what="upload URL")
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
    try:
        result = UploadResult(str(body["id"]), int(body["size"]), str(body["sha256"]))
    except (KeyError, TypeError, ValueError):
        raise CliError(f"{action} failed: the gateway's answer lacks id, size or sha256") from None
    if result.size != size or result.sha256 != digest.hexdigest():
        raise CliError(
            f"{action} failed: the gateway stored {result.size} bytes with sha256 {result.sha256},"
            f" but {size} bytes with sha256 {digest.hexdigest()} were sent"
        )
    return result


async def _json_object(resp: aiohttp.ClientResponse, action: str) -> dict[str, Any]:
    raw = await resp.content.read(MAX_ERROR_BODY)
    try:
        body = json.loads(raw)
    except ValueError:
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
                    raise await _error_from(resp, action, what="download URL")
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
                if resp.status not in (200, 201):
                    raise await _error_from(resp, action, what="URL")
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
    # The seed's bare object, or the platform's {"source": {...}}: the gateway answers both ways.
    inner = body.get("source")
    return inner if isinstance(inner, dict) else body


def source_urls(body: dict[str, Any]) -> tuple[str, str]:
    """(upload_url, download_url) of a create-source answer, in either of its shapes."""
    source = _source_object(body)
    return str(source["upload_url"]), str(source["download_url"])


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC
