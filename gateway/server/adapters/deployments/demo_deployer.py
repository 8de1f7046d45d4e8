"""A local stand-in for the platform's deployer, for ``make run`` and the README walk-through.

With ``deployments.demo_deployer: true`` the serve process takes jobs from the embedded queue,
fetches the archive, checks its sha256, lists it, and reports through the job's ``events_url``
over HTTP, exactly as a real deployer would (so the whole loop can be watched locally). It
deploys nothing. Nothing here logs a URL: the archive and events URLs carry credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from gateway.retry import RetryPolicy

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = logging.getLogger(__name__)

# The platform's archive limit; the stand-in refuses to fetch more than this.
MAX_ARCHIVE_BYTES = 314_572_800
# Archives up to this size are held in memory while listed; larger ones spill to a temp file.
_SPOOL_BYTES = 8 * 1024 * 1024
# Seconds one long poll of the queue waits for a job.
_QUEUE_WAIT = 2
# Attempts at delivering one event (a connection error, a timeout or a 5xx is tried again) before
# the stand-in gives up on it, with 0.2 s then 0.4 s (less a random part) between them.
_REPORT_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0)
_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=10, sock_read=60)
_REPORT_TIMEOUT = aiohttp.ClientTimeout(total=10)


class _NotDelivered(Exception):
    """An event that did not reach the gateway (a connection error, a timeout, a 5xx)."""


class BuildFailed(Exception):
    """The archive cannot be deployed; the message says why, for the deployment's output."""


@dataclass(frozen=True)
class Listing:
    entries: int
    files: int
    root: str | None


def list_archive(fileobj: IO[bytes]) -> Listing:
    """Read a tar.gz archive's headers (blocking: run it in a thread)."""
    entries = files = 0
    tops: set[str] = set()
    nested = False
    try:
        with tarfile.open(fileobj=fileobj, mode="r:gz") as archive:
            for member in archive:
                entries += 1
                files += member.isfile()
                name = member.name.lstrip("./") or "."
                top, sep, _ = name.partition("/")
                tops.add(top)
                nested = nested or bool(sep) or member.isdir()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BuildFailed(f"the archive is not a readable tar.gz ({exc})") from None
    if entries == 0:
        raise BuildFailed("the archive is empty")
    root = f"{next(iter(tops))}/" if len(tops) == 1 and nested else None
    return Listing(entries, files, root)


class Reporter:
    """Posts one deployment's events to its ``events_url``, numbering them from 1."""

    def __init__(self, http: aiohttp.ClientSession, events_url: str) -> None:
        self._http = http
        self._url = events_url
        self._next = 1

    async def status(self, status: str) -> None:
        await self._post({"type": "status", "status": status})

    async def line(self, text: str) -> None:
        await self._post({"type": "log", "content": text})

    async def _post(self, event: dict[str, Any]) -> None:
        event = {"id": self._next, **event}
        self._next += 1
        with contextlib.suppress(_NotDelivered):
            await _REPORT_RETRY.call(lambda _: self._post_once(event), retry_on=(_NotDelivered,))

    async def _post_once(self, event: dict[str, Any]) -> None:
        try:
            async with self._http.post(self._url, json=event, timeout=_REPORT_TIMEOUT) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("demo deployer: reporting failed (%s)", type(exc).__name__)
            raise _NotDelivered() from None
        if resp.status >= 500:
            log.warning("demo deployer: reporting failed (HTTP %d)", resp.status)
            raise _NotDelivered()
        if resp.status != 200:
            log.warning("demo deployer: event refused with HTTP %d", resp.status)


class DemoDeployer:
    """Takes jobs from the queue one at a time and reports on each through its events_url."""

    def __init__(self, sqs: SQSClient, queue: str, http: aiohttp.ClientSession) -> None:
        self._sqs = sqs
        self._queue = queue
        self._http = http

    async def run(self) -> None:
        log.warning(
            "demo deployer running: a local stand-in that deploys nothing "
            "(deployments.demo_deployer; never in production)"
        )
        queue_url = self._queue
        while "://" not in queue_url:
            try:
                queue_url = str((await self._sqs.get_queue_url(QueueName=self._queue))["QueueUrl"])
            except (ClientError, BotoCoreError) as exc:
                log.warning("demo deployer: queue not available (%s)", type(exc).__name__)
                await asyncio.sleep(_QUEUE_WAIT)
        while True:
            try:
                resp = await self._sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=_QUEUE_WAIT
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("demo deployer: queue read failed (%s)", type(exc).__name__)
                await asyncio.sleep(_QUEUE_WAIT)
                continue
            for message in resp.get("Messages", []):
                with contextlib.suppress(ClientError, BotoCoreError):
                    await self._sqs.delete_message(
                        QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                try:
                    await self.handle(message["Body"])
                except Exception:
                    log.exception("demo deployer: a job failed unexpectedly")

    async def handle(self, body: str) -> None:
        try:
            job = json.loads(body)
            events_url = job["events_url"]
            deployment_id = job["id"]
        except (ValueError, KeyError, TypeError):
            log.warning("demo deployer: a message that is not a job with an events_url, skipped")
            return
        reporter = Reporter(self._http, events_url)
        await reporter.status("building")
        try:
            for line in await self.build(job):
                await reporter.line(line)
        except BuildFailed as exc:
            await reporter.line(str(exc))
            await reporter.status("build-error")
            log.info("demo deployer: deployment %s: build-error", deployment_id)
            return
        await reporter.status("success")
        log.info("demo deployer: deployment %s: success", deployment_id)

    async def build(self, job: dict[str, Any]) -> list[str]:
        """Fetch, verify and list the archive: the output lines, or ``BuildFailed``."""
        url = job.get("fetch_url") or job.get("download_url")
        if not isinstance(url, str):
            raise BuildFailed("the job has no archive URL")
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            size, sha256 = await self._fetch(url, spool)
            lines = [f"fetched the archive: {size} bytes"]
            expected = job.get("sha256")
            if expected and expected != sha256:
                raise BuildFailed(f"sha256 mismatch: expected {expected}, got {sha256}")
            lines.append(f"sha256 {sha256} verified" if expected else f"sha256 {sha256}")
            spool.seek(0)
            listing = await asyncio.to_thread(list_archive, spool)
        lines.append(f"{listing.entries} entries, {listing.files} files")
        lines.append(f"root directory: {listing.root or '(none: files at the top level)'}")
        lines.append("nothing deployed: this is the local stand-in deployer")
        return lines

    async def _fetch(self, url: str, sink: IO[bytes]) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        try:
            async with self._http.get(url, timeout=_FETCH_TIMEOUT) as resp:
                if resp.status != 200:
                    raise BuildFailed(f"fetching the archive failed: HTTP {resp.status}")
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if size > MAX_ARCHIVE_BYTES:
                        raise BuildFailed(f"the archive is larger than {MAX_ARCHIVE_BYTES} bytes")
                    digest.update(chunk)
                    sink.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BuildFailed(f"fetching the archive failed ({type(exc).__name__})") from None
        return size, digest.hexdigest()


@contextlib.asynccontextmanager
async def running(deployer: DemoDeployer) -> AsyncIterator[None]:
    """Run ``deployer`` in the background while the block runs; stopped at its end."""
    task = asyncio.create_task(deployer.run(), name="demo-deployer")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
