"""HTTP handler for ``POST /v1/apps/{app}/deployments``: check the request, record the
deployment, forward a job, answer with the record.

The order of checks: API token (401), app name and the token's right to it (403, before the body
is read), the JSON body (415, 400), then every field at once (422 naming each bad field). The
archive URL is checked by ``ArchiveUrlChecker``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import DeployerRejected, GatewayError, ServiceUnavailable, ValidationFailed
from gateway.ids import new_deployment_id
from gateway.server.domain.auth import Authenticator, Identity
from gateway.server.domain.deployments.jobs import Forwarder, Job
from gateway.server.domain.deployments.records import new_record
from gateway.server.domain.deployments.request import (
    ArchiveUrlChecker,
    DeploymentRequest,
    Errors,
    OwnSource,
    app_name_errors,
    parse_request,
)
from gateway.server.domain.signing import UrlSigner
from gateway.server.domain.sources import rfc3339
from gateway.server.http.body import read_json_object
from gateway.server.http.deployments.records import DeploymentRecordHandlers
from gateway.server.observability.metrics import Metrics

log = logging.getLogger(__name__)

# What a deployment refused because the deployer is unavailable is told to wait: about one
# background check period (server.readiness_interval's default).
DEPLOYER_RETRY_AFTER = 5


class DeploymentHandlers:
    """``POST /v1/apps/{app}/deployments``."""

    def __init__(
        self,
        auth: Authenticator,
        signer: UrlSigner,
        archive_urls: ArchiveUrlChecker,
        forwarder: Forwarder,
        records: DeploymentRecordHandlers,
        metrics: Metrics,
        deployer_failure: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._auth = auth
        self._signer = signer
        self._archive_urls = archive_urls
        self._forwarder = forwarder
        # The record's keeper, links and metrics are the ones its read handlers use.
        self._tracker = records.tracker
        self._links = records.links
        self._deployment_metrics = records.metrics
        self._metrics = metrics
        self._deployer_failure = deployer_failure

    async def create(self, request: web.Request) -> web.Response:
        principal = await self._auth.authenticate(request.headers.get("Authorization"))
        app_name = request.match_info["app"]
        parsed, source = await self._validate(request, principal, app_name)
        assert parsed.url is not None
        if (why := self._deployer_failure()) is not None:
            # Known from the background check: fail at once rather than after the forwarder's
            # retries, and record nothing that could only end as aborted.
            self._metrics.deployments.labels("failed").inc()
            raise ServiceUnavailable(
                f"deployments cannot be forwarded now: the deployer is unavailable ({why}); "
                "retry later",
                retry_after=DEPLOYER_RETRY_AFTER,
            )
        deployment_id = new_deployment_id()
        now = self._signer.now()
        created_at = rfc3339(now)
        record = new_record(
            deployment_id,
            app_name,
            created_at,
            parsed.git_ref,
            parsed.url,
            parsed.postdeploy_hook,
            principal.name,
            principal.email,
        )
        # Recorded before the job leaves: a deployer may report back at once.
        await self._tracker.create(record, now)
        fields: dict[str, Any] = {
            "id": deployment_id,
            "app": app_name,
            "git_ref": parsed.git_ref,
            "download_url": parsed.url,
            "created_at": created_at,
            "requested_by": principal.name,
            "events_url": self._links.events_url(app_name, deployment_id),
        }
        if parsed.postdeploy_hook is not None:
            fields["postdeploy_hook"] = parsed.postdeploy_hook
        if source is not None:
            fields.update(source.job_fields())
        await self._forward(Job.of(fields))
        log.info(
            "deployment %s of %s forwarded (archive on %s)",
            deployment_id,
            app_name,
            "this gateway" if source else urlsplit(parsed.url).hostname,
        )
        # The gateway's own record is the answer, whatever the deployer said.
        return web.json_response({"deployment": self._links.view(record)}, status=201)

    async def _validate(
        self, request: web.Request, principal: Identity, app_name: str
    ) -> tuple[DeploymentRequest, OwnSource | None]:
        """The request and the gateway's own source it names (if any), or ``ValidationFailed``
        naming every bad field; ``Forbidden`` before the body is read when the token may not use
        the app."""
        errors: Errors = {}
        if problems := app_name_errors(app_name):
            errors["app"] = problems
        else:
            principal.require_app(app_name)
        data = await read_json_object(request, allow_empty=True)
        parsed, field_errors = parse_request(data)
        errors.update(field_errors)
        source: OwnSource | None = None
        if parsed is not None and parsed.url is not None:
            checked = await self._archive_urls.check(parsed.url)
            if isinstance(checked, list):
                errors[parsed.url_field] = checked
            else:
                source = checked
        if errors:
            self._metrics.deployments.labels("rejected").inc()
            # Field names only: the URL carries a token.
            log.info("deployment for %r rejected: %s", app_name, ", ".join(sorted(errors)))
            raise ValidationFailed(errors)
        assert parsed is not None
        return parsed, source

    async def _forward(self, job: Job) -> None:
        deployments = self._metrics.deployments
        try:
            await self._forwarder.forward(job)
        except DeployerRejected as exc:
            deployments.labels("rejected").inc()
            await self._abort(job, exc.message)
            raise
        except GatewayError as exc:
            deployments.labels("failed").inc()
            await self._abort(job, exc.message)
            raise
        deployments.labels("forwarded").inc()

    async def _abort(self, job: Job, why: str) -> None:
        """The job never reached the deployer: its record must not stay queued."""
        reason = f"the deployment could not be handed to the deployer: {why}"
        try:
            await self._tracker.abort(job.app, job.id, reason, rfc3339(self._signer.now()))
        except GatewayError as exc:
            log.warning("deployment %s: could not record its abort (%s)", job.id, exc.message)
            return
        self._deployment_metrics.finished.labels("aborted").inc()
