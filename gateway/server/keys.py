"""The ``web.AppKey``s of the application: only state that aiohttp's runner (``serve``), signals
or tests reach; handlers are given their collaborators by the app factory."""

from __future__ import annotations

from aiohttp import web

from gateway.server.domain.storage import ObjectStore
from gateway.server.domain.uploads import BufferBudget
from gateway.server.observability.access import AccessLog
from gateway.server.observability.metrics import ActiveRequests, Metrics

METRICS = web.AppKey("metrics", Metrics)
ACTIVE_REQUESTS = web.AppKey("active_requests", ActiveRequests)
BUDGET = web.AppKey("budget", BufferBudget)
STORE = web.AppKey("store", ObjectStore)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
