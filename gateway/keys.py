"""Every ``web.AppKey`` of the application, in one place."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from .auth import Authenticator
from .config import Config
from .forwarders import Forwarder
from .observability import ClientAddress, InFlight, Metrics
from .signing import UrlSigner
from .storage import ObjectStore
from .uploads import BufferBudget, Uploader
from .urlguard import UrlGuard

CONFIG = web.AppKey("config", Config)
SIGNER = web.AppKey("signer", UrlSigner)
AUTH = web.AppKey("auth", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
BUDGET = web.AppKey("budget", BufferBudget)
CLIENT_ADDRESS = web.AppKey("client_address", ClientAddress)
INFLIGHT = web.AppKey("inflight", InFlight)
URL_GUARD = web.AppKey("url_guard", UrlGuard)
# Opened in cleanup_ctx, so only present while the app runs.
HTTP = web.AppKey("http", aiohttp.ClientSession)
S3_CLIENT = web.AppKey("s3_client", Any)
STORE = web.AppKey("store", ObjectStore)
UPLOADER = web.AppKey("uploader", Uploader)
FORWARDER = web.AppKey("forwarder", Forwarder)
