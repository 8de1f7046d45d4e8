"""HTTP handler for ``POST /v1/apps/{app}/deployments``: check the request, forward a job.

The order of checks: API token (401), app name and the token's right to it (403, before the body
is read), the JSON body (415, 400), then every field at once (422 naming each bad field). The
archive URL is checked by ``ArchiveUrlChecker``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import GatewayError, ValidationFailed
from gateway.server.adapters.forwarders import DeployerRejected, Forwarder, Job
from gateway.server.domain.auth import Authenticator, Principal
from gateway.server.domain.deployments import (
    ArchiveUrlChecker,
    DeploymentRequest,
    Errors,
    SourceFacts,
    app_name_errors,
    deployment_object,
    parse_request,
)
from gateway.server.domain.signing import UrlSigner
from gateway.server.domain.sources import rfc3339
from gateway.server.http.body import read_json_object
from gateway.server.observability.metrics import Metrics

log = logging.getLogger(__name__)


class DeploymentHandlers:
    """``POST /v1/apps/{app}/deployments``."""

    def __init__(
        self,
        auth: Authenticator,
        signer: UrlSigner,
        archive_urls: ArchiveUrlChecker,
        forwarder: Forwarder,
        metrics: Metrics,
    ) -> None:
        self._auth = auth
        self._signer = signer
        self._archive_urls = archive_urls
        self._forwarder = forwarder
        self._metrics = metrics

    async def create(self, request: web.Request) -> web.Response:
        principal = self._auth.authenticate(request.headers.get("Authorization"))
        app_name = request.match_info["app"]
        parsed, facts = await self._validate(request, principal, app_name)
        assert parsed.url is not None
        deployment_id = str(uuid.uuid4())
        created_at = rfc3339(self._signer.now())
        fields: dict[str, Any] = {
            "id": deployment_id,
            "app": app_name,
            "git_ref": parsed.git_ref,
            "download_url": parsed.url,
            "created_at": created_at,
            "requested_by": principal.name,
        }
        if facts is not None:
            fields.update(facts.job_fields())
        answer = await self._forward(Job.of(fields))
        log.info(
            "deployment %s of %s forwarded (archive on %s)",
            deployment_id,
            app_name,
            "this gateway" if facts else urlsplit(parsed.url).hostname,
        )
        if answer is None:
            answer = {
                "deployment": deployment_object(
                    deployment_id, app_name, created_at, parsed.git_ref, parsed.url
                )
            }
        return web.json_response(answer, status=201)

    async def _validate(
        self, request: web.Request, principal: Principal, app_name: str
    ) -> tuple[DeploymentRequest, SourceFacts | None]:
        """The request and its own source's facts, or ``ValidationFailed`` naming every bad
        field; ``Forbidden`` before the body is read when the token may not use the app."""
        errors: Errors = {}
        if problems := app_name_errors(app_name):
            errors["app"] = problems
        else:
            principal.require_app(app_name)
        data = await read_json_object(request, allow_empty=True)
        parsed, field_errors = parse_request(data)
        errors.update(field_errors)
        facts: SourceFacts | None = None
        if parsed is not None and parsed.url is not None:
            checked = await self._archive_urls.check(parsed.url)
            if isinstance(checked, list):
                errors[parsed.url_field] = checked
            else:
                facts = checked
        if errors:
            self._metrics.deployments.labels("rejected").inc()
            # Field names only: the URL carries a token.
            log.info("deployment for %r rejected: %s", app_name, ", ".join(sorted(errors)))
            raise ValidationFailed(errors)
        assert parsed is not None
        return parsed, facts

    async def _forward(self, job: Job) -> dict[str, Any] | None:
        deployments = self._metrics.deployments
        try:
            answer = await self._forwarder.forward(job)
        except DeployerRejected:
            deployments.labels("rejected").inc()
            raise
        except GatewayError:
            deployments.labels("failed").inc()
            raise
        deployments.labels("forwarded").inc()
        return answer
