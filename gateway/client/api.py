"""The gateway's API, as the CLI calls it: create sources and deployments, read an app.

Every failure becomes a ``CliError`` whose message is one line naming the cause, safe to print: it
never contains the API token, and URLs in it lose their query string (a source URL's ``?token=``
is a credential too). The API token is sent as ``Authorization: Bearer`` to the API URL only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from gateway.client.errors import (
    MAX_ERROR_BODY,
    CliError,
    describe_error,
    error_from,
    network_errors,
    safe_url,
)
from gateway.client.output import Reporter
from gateway.paths import APP, DEPLOYMENTS, SOURCES, fill
from gateway.retry import RetryPolicy

GZIP_MAGIC = b"\x1f\x8b"
# Connecting gets a bound; reading does not get a total (a 300 MiB transfer on a slow line takes a
# while), only a bound on silence between two reads.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
USER_AGENT = f"sources-gateway-cli/0.1 aiohttp/{aiohttp.__version__}"
# A 429 (auth.limits) is waited out and tried again this many times; a wait longer than
# MAX_RETRY_AFTER seconds is not worth sitting through: the error is shown at once.
MAX_RATE_LIMITED_RETRIES = 3
MAX_RETRY_AFTER = 60.0
# What a 429 without a readable Retry-After waits.
DEFAULT_RETRY_AFTER = 1.0
# The gateway says how long each wait is (Retry-After); the backoff is never used.
RATE_LIMITED_RETRY = RetryPolicy(
    attempts=1 + MAX_RATE_LIMITED_RETRIES, base_delay=DEFAULT_RETRY_AFTER, max_delay=MAX_RETRY_AFTER
)


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


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.content.read(MAX_ERROR_BODY)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


async def json_object(resp: aiohttp.ClientResponse, action: str) -> dict[str, Any]:
    body = await _json_or_none(resp)
    if not isinstance(body, dict):
        raise CliError(f"{action} failed: the answer ({resp.status}) is not a JSON object")
    return body


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
        attempt = 1
        while isinstance(answer := await self._post_once(path, action, payload), _RateLimited):
            if attempt >= RATE_LIMITED_RETRY.attempts or answer.wait > MAX_RETRY_AFTER:
                raise answer.error
            wait = answer.wait
            self._reporter.info(f"{action}: the gateway asks to slow down; retrying in {wait:g} s")
            await RATE_LIMITED_RETRY.pause(attempt, wait)
            attempt += 1
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
                return await json_object(resp, action)

    async def check_app(self, app: str) -> None:
        """Whether the token is valid and may deploy ``app``, asked before anything is packed:
        ``GET /v1/apps/{app}``; on a gateway without that endpoint (404 for the route), the first
        entry of ``GET /v1/apps/{app}/deployments``, which checks the same; on one without
        either, nothing (the deployment itself will tell)."""
        action = f"checking app {app}"
        for path in (fill(APP, app=app), fill(DEPLOYMENTS, app=app) + "?per_page=1"):
            if await self._get_checked(path, action):
                return
        self._reporter.debug(f"{action}: the gateway has no such endpoint; skipped")

    async def _get_checked(self, path: str, action: str) -> bool:
        """GET ``path``: True on 200, False when the gateway has no such route, else the error."""
        url = f"{self._base}{path}"
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        self._reporter.debug(f"GET {safe_url(url)}")
        with network_errors(action, url):
            async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                self._reporter.debug(f"GET {safe_url(url)} -> {resp.status}")
                if resp.status == 200:
                    return True
                if resp.status in (404, 405):
                    body = await _json_or_none(resp)
                    if not (isinstance(body, dict) and body.get("resource") == "app"):
                        return False
                    raise CliError(f"{action} failed: {describe_error(404, body, what='URL')}")
                raise await error_from(resp, action, what="URL")

    async def create_source(self) -> dict[str, Any]:
        """``POST /v1/sources``: the new source, with ``upload_url`` and ``download_url``."""
        action = "creating a source"
        body = await self._post(SOURCES, action, None)
        source = source_object(body)
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
        return await self._post(
            fill(DEPLOYMENTS, app=app), f"deploying {app}", {"deployment": deployment}
        )


def source_object(body: dict[str, Any]) -> dict[str, Any]:
    # The documented bare object, or the platform's {"source": {...}}: the gateway answers both.
    inner = body.get("source")
    return inner if isinstance(inner, dict) else body


def urls_of_source(body: dict[str, Any]) -> tuple[str, str]:
    """(upload_url, download_url) of a create-source answer, in either of its shapes."""
    source = source_object(body)
    return str(source["upload_url"]), str(source["download_url"])


def is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC
