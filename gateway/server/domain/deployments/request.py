"""Deployments: ``POST /v1/apps/{app}/deployments`` checks the request, then forwards a job.

The order of checks: API token (401), app name and the token's right to it (403, before the body
is read), the JSON body (415, 400), then every field at once (422 naming each bad field). The
archive URL is either one of this gateway's own download URLs, checked for real (token, object,
gzip magic), or any other URL, checked by the SSRF rules of ``urlguard``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from gateway.errors import ObjectNotFound, TokenExpired, TokenInvalid
from gateway.ids import APP_NAME, APP_NAME_RULE, SOURCE_ID, git_ref_errors
from gateway.paths import SOURCE
from gateway.server.domain.archive.facts import ArchiveFacts
from gateway.server.domain.deployments.records import hook_errors
from gateway.server.domain.signing import Purpose, UrlSigner
from gateway.server.domain.sources import archive_of, object_key
from gateway.server.domain.storage import ObjectStore
from gateway.server.domain.urlguard import UrlGuard, check_form

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
# Both names of the archive URL: the published Sources API's, and the platform's current API's.
URL_FIELDS = ("download_url", "source_url")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Errors = dict[str, list[str]]


@dataclass(frozen=True)
class DeploymentRequest:
    """The fields of a request body; ``url`` is None when no usable URL was given."""

    git_ref: str | None
    url: str | None
    url_field: str
    postdeploy_hook: str | None = None


@dataclass(frozen=True)
class OwnUrl:
    """A URL on this gateway's origin: a source's id and token, or ``source_id`` None if the
    path is not a source's."""

    source_id: str | None
    token: str | None


@dataclass(frozen=True)
class OwnSource:
    """What the job says about one of the gateway's own sources."""

    source_id: str
    size: int
    sha256: str | None
    fetch_url: str
    archive: ArchiveFacts | None = None  # None: stored without the archive check

    def job_fields(self) -> dict[str, Any]:
        fields = {
            "source_id": self.source_id,
            "size": self.size,
            "sha256": self.sha256,
            "fetch_url": self.fetch_url,
        }
        if self.archive is not None:
            fields["archive"] = self.archive.as_json()
        return fields


def app_name_errors(app: str) -> list[str]:
    if APP_NAME.fullmatch(app):
        return []
    return [APP_NAME_RULE]


def parse_request(data: Mapping[str, Any]) -> tuple[DeploymentRequest | None, Errors]:
    """Read ``{"deployment": {"git_ref", "download_url" | "source_url", "postdeploy_hook"}}``;
    unknown keys are ignored, an empty ``git_ref`` or hook counts as none. Returns the request
    and the errors found."""
    deployment = data.get("deployment")
    if deployment is None:
        return None, {"deployment": ["is required"]}
    if not isinstance(deployment, dict):
        return None, {"deployment": ["must be an object"]}
    errors: Errors = {}
    git_ref = deployment.get("git_ref")
    if git_ref is not None and not isinstance(git_ref, str):
        errors["git_ref"] = ["must be a string"]
        git_ref = None
    elif git_ref and (problems := git_ref_errors(git_ref)):
        errors["git_ref"] = problems
    given = {name: deployment[name] for name in URL_FIELDS if deployment.get(name) is not None}
    for name, value in given.items():
        if not isinstance(value, str):
            errors[name] = ["must be a string"]
    urls = {name: value for name, value in given.items() if isinstance(value, str)}
    url_field, url = next(iter(urls.items()), ("download_url", None))
    if not given:
        errors["download_url"] = ["is required"]
    elif len(set(urls.values())) > 1:
        errors["source_url"] = ["must be the same as download_url when both are given"]
        url = None
    elif len(urls) < len(given):
        url = None  # one of the two names has a non-string: do not guess
    hook = deployment.get("postdeploy_hook")
    if problems := hook_errors(hook):
        errors["postdeploy_hook"] = problems
        hook = None
    return DeploymentRequest(git_ref or None, url, url_field, hook or None), errors


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def match_own_url(url: str, public_url: str) -> OwnUrl | None:
    """``url`` on the origin (scheme, host, port) of ``public_url``, or None if it is elsewhere."""
    try:
        parts, base = urlsplit(url), urlsplit(public_url)
        if _origin(parts) != _origin(base):
            return None
    except ValueError:
        return None
    prefix = base.path.rstrip("/") + SOURCE.removesuffix("{id}")
    source_id = parts.path[len(prefix) :] if parts.path.startswith(prefix) else ""
    if not SOURCE_ID.fullmatch(source_id):
        return OwnUrl(None, None)
    token = next((v for k, v in parse_qsl(parts.query) if k == "token"), None)
    return OwnUrl(source_id, token)


async def inspect_own_source(
    own: OwnUrl, signer: UrlSigner, store: ObjectStore, prefix: str, fetch_ttl: int
) -> OwnSource | list[str]:
    """Check one of the gateway's own URLs as a fetch of it would be: a valid, unexpired download
    token for that id, an uploaded object, gzip magic first. The source, or the error messages.

    Storage failures other than a missing object propagate (502/503, not the user's fault)."""
    if own.source_id is None:
        return ["points at this gateway but is not a source's download URL"]
    if not own.token:
        return ["download URL has no token"]
    try:
        signer.verify(Purpose.DOWNLOAD, own.source_id, own.token)
    except (TokenExpired, TokenInvalid) as exc:
        return [exc.message]
    key = object_key(prefix, own.source_id)
    try:
        info = await store.stat(key)
        if info.size < len(GZIP_MAGIC):
            return ["archive is not gzip"]
        async with store.read(key, 0, len(GZIP_MAGIC) - 1) as chunks:
            head = b"".join([chunk async for chunk in chunks])
    except ObjectNotFound:
        return ["source has not been uploaded"]
    if head[: len(GZIP_MAGIC)] != GZIP_MAGIC:
        return ["archive is not gzip"]
    fetch_url = await store.presign_get(key, fetch_ttl)
    archive = archive_of(info)
    return OwnSource(own.source_id, info.size, info.sha256, fetch_url, archive)


class ArchiveUrlChecker:
    """Checks a deployment's archive URL: one of this gateway's own source URLs for real, any
    other by the SSRF rules of ``UrlGuard``."""

    def __init__(
        self,
        public_url: str,
        signer: UrlSigner,
        store: ObjectStore,
        prefix: str,
        fetch_ttl: int,
        guard: UrlGuard,
    ) -> None:
        self._public_url = public_url
        self._signer = signer
        self._store = store
        self._prefix = prefix
        self._fetch_ttl = fetch_ttl
        self._guard = guard

    async def check(self, url: str) -> OwnSource | list[str] | None:
        """Errors for ``url``; the source if it is one of ours; None for a fine
        foreign URL."""
        form = check_form(url)
        if isinstance(form, list):
            return form
        own = match_own_url(url, self._public_url)
        if own is not None:
            # Our own URLs are not subject to the SSRF rules: public_url may be loopback in dev,
            # and what the URL reaches is known exactly.
            return await inspect_own_source(
                own, self._signer, self._store, self._prefix, self._fetch_ttl
            )
        errors = await self._guard.check(url)
        return errors or None
