"""Wiring of resumable uploads: the session core over the store, and its two protocol adapters
(tus, the IETF draft), built once per application by ``create_app``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.config import Config
from gateway.server.adapters.json_objects import S3JsonObjects
from gateway.server.adapters.outbound import Connections
from gateway.server.adapters.s3 import S3Store
from gateway.server.domain.archive.check import ArchivePolicy
from gateway.server.domain.archive.pool import CheckPool
from gateway.server.domain.resumable import SessionLimits, UploadSessions
from gateway.server.domain.resumable_finish import Finisher
from gateway.server.domain.resume_token import ResumeTokens
from gateway.server.domain.signing import Clock, UrlSigner
from gateway.server.domain.upload_state import UploadStates
from gateway.server.domain.uploads import BufferBudget
from gateway.server.http.resumable import Availability, ResumableHttp
from gateway.server.http.sources import SourceHandlers
from gateway.server.http.tus import TusHandlers
from gateway.server.http.upload_draft import DraftHandlers
from gateway.server.observability.metrics import Metrics

log = logging.getLogger(__name__)


class Resumable:
    """The resumable-upload adapters (tus, the IETF draft) over one session core."""

    def __init__(
        self,
        config: Config,
        signer: UrlSigner,
        connections: Connections,
        store: S3Store,
        budget: BufferBudget,
        metrics: Metrics,
        clock: Clock,
        pool: CheckPool | None = None,
    ) -> None:
        settings = config.sources.resumable
        self.states = UploadStates(
            S3JsonObjects(connections, config.storage.bucket), store, settings.prefix
        )
        limits = SessionLimits(
            config.sources.part_size_bytes,
            config.sources.max_size_bytes,
            settings.ttl_seconds,
            settings.max_open_per_source,
        )
        archive = ArchivePolicy.of(config.sources, pool)
        finisher = Finisher(
            store,
            self.states,
            archive,
            config.storage.prefix,
            on_read_back=metrics.resumable_read_back.inc,
        )
        sessions = UploadSessions(store, self.states, budget, finisher, limits, clock)
        self.http = ResumableHttp(
            sessions,
            signer,
            ResumeTokens(config.signing.secret_keys, settings.ttl_seconds, clock),
            config.server.base_url,
            config.server.body_timeout,
            metrics,
            Availability(settings.enabled),
        )
        self.tus = TusHandlers(self.http, settings.checksum_algorithms)

    def draft(self, config: Config, plain: SourceHandlers) -> DraftHandlers:
        settings = config.sources.resumable
        # Resumable appends and plain uploads share auth.limits.concurrent_uploads.
        self.http.slots = plain.upload_slots
        draft = DraftHandlers(self.http, settings.interop_versions, settings.send_104, plain.upload)
        self.tus.discovery_extra = draft.discovery  # type: ignore[method-assign]
        return draft

    async def probe_context(self, app: web.Application) -> AsyncIterator[None]:
        """A ``cleanup_ctx`` entry: the probe, in the background once the connections are open
        (a store that hangs must not hold the start)."""
        available = self.http.available
        if available.enabled:
            available.probing = asyncio.ensure_future(self.probe())
        yield
        if available.probing is not None and not available.probing.done():
            available.probing.cancel()
            await asyncio.wait([available.probing])

    async def probe(self) -> None:
        """Resumable uploads rest on conditional writes: without them they are refused (501)."""
        try:
            honoured = await self.states.probe()
        except Exception as exc:
            log.error("could not probe the bucket's conditional writes (%s)", exc)
            return  # unknown: requests try, and a store that ignores If-Match is found then
        self.http.available.conditional_writes = honoured
        if not honoured:
            log.error(
                "bucket %s ignores conditional writes (If-None-Match/If-Match): resumable "
                "uploads are refused with 501, plain uploads work",
                self.states.prefix,
            )
