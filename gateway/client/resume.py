"""Uploads that survive a dropped connection: ``gateway deploy`` and ``gateway sources upload``
send archives with the IETF resumable-upload draft (draft-ietf-httpbis-resumable-upload, interop
version 9) on the source's upload_url.

- The upload is created with an empty ``POST`` (``Upload-Complete: ?0``, ``Upload-Length``, the
  archive's sha256 as ``Repr-Digest``, which the gateway checks on completion); its resource URL
  goes into a state file (``ResumeFile``, keyed by the upload URL and the archive's sha256).
- The bytes go in one ``PATCH`` from the offset with ``Upload-Complete: ?1``, streamed from disk.
  A dropped connection, a 5xx or a 429 reads the offset back (``HEAD``) and continues from there
  after a pause (``FIRST_PAUSE``, doubled, at most ``MAX_PAUSE``), the progress bar going back to
  the offset; ``MAX_ATTEMPTS`` failures in a row that bring nothing new (less than
  ``MIN_PROGRESS``) give up, the state file kept.
- The state file is removed when the upload ends (done, or refused for good); after Ctrl-C it
  stays, and the same command run again resumes.
- Where creating is not answered 201 (a gateway without resumable uploads, an object store's
  presigned URL), the archive goes in the plain ``PUT`` (``transfer.upload``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import aiohttp

from gateway.client.api import json_object
from gateway.client.errors import CliError, Interrupted, error_from, safe_url
from gateway.client.output import Reporter
from gateway.client.resume_retry import (
    Attempts,
    GaveUp,
    Gone,
    Retry,
    raise_retryable,
    requesting,
)
from gateway.client.resume_state import ResumeFile
from gateway.client.transfer import (
    CHUNK_SIZE,
    UploadAnswer,
    check_answer,
    file_chunks,
    upload,
    upload_answer,
)

INTEROP_VERSION = "9"
PARTIAL_UPLOAD = "application/partial-upload"
# An attempt that got fewer bytes further than this (a network that lets a few kilobytes through
# each time) is no progress: counting it as some would keep a 300 MB upload going for ever.
MIN_PROGRESS = 1024 * 1024
# What a state file is kept for when the gateway does not say how long its upload lives.
DEFAULT_LIFETIME = 3600


@dataclass(frozen=True)
class Archive:
    """``size`` bytes of ``source`` from its position ``start``, with their sha256 (hex)."""

    source: BinaryIO
    start: int
    size: int
    sha256: str


def file_sha256(source: BinaryIO, size: int) -> str:
    """The sha256 of ``size`` bytes of ``source`` from where it stands (put back there after)."""
    start = source.tell()
    digest = hashlib.sha256()
    left = size
    while left and (chunk := source.read(min(CHUNK_SIZE * 4, left))):
        digest.update(chunk)
        left -= len(chunk)
    source.seek(start)
    return digest.hexdigest()


async def upload_resumable(
    session: aiohttp.ClientSession,
    url: str,
    source: BinaryIO,
    size: int,
    reporter: Reporter,
    *,
    label: str = "archive",
    sha256: str | None = None,
) -> UploadAnswer:
    """Upload ``size`` bytes of ``source`` (from where it stands) to ``url``, resumably where the
    gateway allows it, else in one plain ``PUT``. ``sha256``: the bytes' digest when known."""
    start = await asyncio.to_thread(source.tell)
    if sha256 is None:
        sha256 = await asyncio.to_thread(file_sha256, source, size)
    archive = Archive(source, start, size, sha256)
    state = ResumeFile("upload", safe_url(url), sha256)
    resumer = _Resumer(session, url, archive, reporter, f"uploading {label}", state)
    answer = await resumer.run()
    if answer is None:
        await asyncio.to_thread(source.seek, start)
        return await upload(session, url, source, size, reporter, label=label)
    return answer


class _Resumer:
    """One archive's resumable upload to one upload_url, its state file kept meanwhile."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        archive: Archive,
        reporter: Reporter,
        action: str,
        state: ResumeFile,
    ) -> None:
        self.session = session
        self.url = url
        self.archive = archive
        self.reporter = reporter
        self.action = action
        self.state = state

    async def run(self) -> UploadAnswer | None:
        """The answer, or None when this upload_url takes no resumable upload."""
        saved = await asyncio.to_thread(self.state.load)
        resource = saved.get("upload") if saved is not None else None
        if isinstance(resource, str):
            self.reporter.info(f"{self.action}: resuming the upload interrupted earlier")
            try:
                return await self._send(resource, resumed=True)
            except Gone:
                self.reporter.info(f"{self.action}: that upload has expired; starting again")
        resource = await self._create()
        if resource is None:
            return None
        try:
            return await self._send(resource, resumed=False)
        except Gone:
            message = f"{self.action} failed: the upload was cancelled on the gateway"
            raise CliError(message) from None

    async def _send(self, resource: str, *, resumed: bool) -> UploadAnswer:
        transfer = _Transfer(self.session, resource, self.archive, self.reporter, self.action)
        try:
            answer = await transfer.run(resumed=resumed)
        except asyncio.CancelledError:
            # Ctrl-C: the state file stays; the one line says how to go on. What the gateway
            # holds is not known without asking it (and asking would take the upload over from
            # the request it is still saving): the bytes sent, of which it keeps what reached it.
            raise Interrupted(
                f"interrupted; {transfer.sent} of {self.archive.size} bytes sent (the gateway"
                " keeps what reached it): run the same command again to resume the upload"
            ) from None
        except GaveUp:
            raise
        except (Gone, CliError):
            await asyncio.to_thread(self.state.remove)
            raise
        await asyncio.to_thread(self.state.remove)
        return answer

    async def _create(self) -> str | None:
        """Create the upload: its resource URL (saved), or None to use a plain PUT."""
        archive = self.archive
        digest = base64.b64encode(bytes.fromhex(archive.sha256)).decode()
        headers = {
            "Upload-Draft-Interop-Version": INTEROP_VERSION,
            "Upload-Complete": "?0",
            "Upload-Length": str(archive.size),
            "Repr-Digest": f"sha-256=:{digest}:",
            "Content-Type": "application/gzip",
        }
        attempts = Attempts(self.reporter, self.action)
        while True:
            try:
                created = await self._post(headers)
            except Retry as exc:
                await attempts.failed(exc)
                continue
            if created is None:
                return None
            resource, lifetime = created
            why = await asyncio.to_thread(
                self.state.save, {"upload": resource, "expires_at": time.time() + lifetime}
            )
            if why is not None:
                self.reporter.warning(f"cannot keep the upload's state, so Ctrl-C loses it: {why}")
            return resource

    async def _post(self, headers: dict[str, str]) -> tuple[str, float] | None:
        url = self.url
        self.reporter.debug(f"POST {safe_url(url)} (creating a resumable upload)")
        with requesting(self.action, url, creating=True):
            async with self.session.post(
                url, data=b"", headers=headers, allow_redirects=False
            ) as resp:
                self.reporter.debug(f"POST {safe_url(url)} -> {resp.status}")
                raise_retryable(resp, creating=True)
                location = resp.headers.get("Location", "")
                if resp.status != 201 or urlsplit(location).scheme not in ("http", "https"):
                    self.reporter.debug("no resumable upload here: a plain PUT")
                    return None
                return location, _lifetime(resp.headers.get("Upload-Limit", ""))


class _Transfer:
    """The bytes going to one upload resource: ``PATCH`` from the offset until complete."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        resource: str,
        archive: Archive,
        reporter: Reporter,
        action: str,
    ) -> None:
        self.session = session
        self.resource = resource
        self.archive = archive
        self.reporter = reporter
        self.action = action
        self.offset = 0
        self._patching = _Sent()  # the bytes of the PATCH under way, from self.offset

    @property
    def sent(self) -> int:
        """The bytes known to be on the gateway, and those sent since."""
        return self.offset + self._patching.bytes

    async def run(self, *, resumed: bool) -> UploadAnswer:
        attempts = Attempts(self.reporter, self.action)
        if resumed and (done := await self._resume_point(attempts)) is not None:
            return done
        with self.reporter.bar(self.archive.size, "upload") as bar:
            while True:
                bar.n = self.offset  # on a resume, the bar goes on from the gateway's offset
                bar.refresh()
                before = self.offset
                try:
                    return await self._patch(bar)
                except Retry as exc:
                    await attempts.failed(exc)
                if (done := await self._resume_point(attempts)) is not None:
                    return done
                if self.offset >= min(before + MIN_PROGRESS, self.archive.size):
                    attempts.progressed()

    async def _resume_point(self, attempts: Attempts) -> UploadAnswer | None:
        """Read the offset back (``HEAD``), retrying as a ``PATCH`` does; the answer when the
        upload turns out to be complete already."""
        while True:
            try:
                return await self._head()
            except Retry as exc:
                await attempts.failed(exc)

    async def _head(self) -> UploadAnswer | None:
        url = self.resource
        self.reporter.debug(f"HEAD {safe_url(url)}")
        with requesting(self.action, url):
            async with self.session.head(
                url, headers=_draft_headers(), allow_redirects=False
            ) as resp:
                self.reporter.debug(f"HEAD {safe_url(url)} -> {resp.status}")
                raise_retryable(resp)
                if resp.status == 404:
                    raise Gone
                if resp.status not in (200, 204):
                    raise await error_from(resp, self.action, what="upload URL")
                self.offset = _offset_of(resp, self.action)
                self._patching = _Sent()  # what the gateway has is known again
                if resp.headers.get("Upload-Complete", "").strip() != "?1":
                    if self.offset:
                        self.reporter.info(
                            f"{self.action}: the gateway has {self.offset} of"
                            f" {self.archive.size} bytes; sending the rest"
                        )
                    return None
                return self._completed(resp)

    def _completed(self, resp: aiohttp.ClientResponse) -> UploadAnswer:
        """The answer of an upload found complete (its own answer was lost on the way)."""
        sha256 = _repr_sha256(resp.headers.get("Repr-Digest", ""))
        source_id = urlsplit(self.resource).path.split("/uploads/", 1)[0].rpartition("/")[2]
        answer = UploadAnswer(source_id, self.offset, sha256 or "")
        check_answer(answer, self.archive.size, self.archive.sha256, self.action)
        return answer

    async def _patch(self, bar: Any) -> UploadAnswer:
        archive, offset = self.archive, self.offset
        await asyncio.to_thread(archive.source.seek, archive.start + offset)
        headers = {
            **_draft_headers(),
            "Upload-Offset": str(offset),
            "Upload-Complete": "?1",
            "Content-Type": PARTIAL_UPLOAD,
            "Content-Length": str(archive.size - offset),
        }
        self._patching = sent = _Sent()
        body = file_chunks(archive.source, archive.size - offset, sent, bar, asyncio.Event())
        url = self.resource
        self.reporter.debug(f"PATCH {safe_url(url)} (from {offset} of {archive.size})")
        with requesting(self.action, url):
            async with self.session.patch(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                self.reporter.debug(f"PATCH {safe_url(url)} -> {resp.status}")
                raise_retryable(resp)
                if resp.status == 409:
                    held = resp.headers.get("Upload-Offset", "?")
                    raise Retry(f"the gateway holds {held} bytes, not {offset}")
                if resp.status == 404:
                    raise Gone
                if resp.status != 200:
                    raise await error_from(resp, self.action, what="upload URL")
                body_json = await json_object(resp, self.action)
        answer = upload_answer(body_json, self.action)
        check_answer(answer, archive.size, archive.sha256, self.action)
        self.offset = archive.size
        return answer


class _Sent:
    """Counts a PATCH's bytes as they go (in the place of a digest: they need none of their own,
    the whole archive's is checked)."""

    def __init__(self) -> None:
        self.bytes = 0

    def update(self, chunk: bytes) -> None:
        self.bytes += len(chunk)


def _draft_headers() -> dict[str, str]:
    return {"Upload-Draft-Interop-Version": INTEROP_VERSION}


def _offset_of(resp: aiohttp.ClientResponse, action: str) -> int:
    value = resp.headers.get("Upload-Offset", "").strip()
    if not value.isdigit():
        raise CliError(f"{action} failed: the gateway's answer has no Upload-Offset")
    return int(value)


def _lifetime(limit: str) -> float:
    """The seconds the upload lives, from ``Upload-Limit``'s ``max-age``."""
    for member in limit.split(","):
        name, _, value = member.strip().partition("=")
        if name.strip() == "max-age" and value.strip().isdigit():
            return float(value.strip())
    return DEFAULT_LIFETIME


def _repr_sha256(value: str) -> str | None:
    """The hex sha256 in a ``Repr-Digest`` field (``sha-256=:<base64>:``), or None."""
    for member in value.split(","):
        name, _, encoded = member.strip().partition("=")
        encoded = encoded.strip()
        if name.strip().lower() == "sha-256" and len(encoded) > 2 and encoded[0] == ":":
            try:
                return base64.b64decode(encoded[1:-1], validate=True).hex()
            except ValueError:
                return None
    return None
