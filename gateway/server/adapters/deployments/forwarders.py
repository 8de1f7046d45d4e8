"""Handing a deployment job to the platform's deployer, which is not ours.

    Forwarder (protocol)    forward(job): the deployer's answer (a JSON object) or None
     +-- HttpForwarder      POST the job with Idempotency-Key and X-Gateway-Signature; retries
     |                      connection errors, timeouts and 5xx with exponential backoff
     +-- SqsForwarder       SendMessage to a queue; FIFO queues get a group and deduplication id

Errors raised (all ``GatewayError``, rendered by the one error middleware):
``DeployerRejected`` (the deployer's 4xx, relayed), ``DeployerUnavailable`` (502: retries ran out
or the deployer answered nonsense), ``QueueUnavailable`` (503: SQS unreachable), ``QueueFailed``
(502: SQS answered an error).

Nothing here logs a job body: it carries the archive URL, whose token is a credential.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import Config
from gateway.errors import DeployerRejected, DeployerUnavailable, QueueFailed, QueueUnavailable
from gateway.retry import RetryPolicy
from gateway.server.adapters.aws import error_code, open_sqs_client
from gateway.server.adapters.outbound import Connections
from gateway.server.domain.deployments.jobs import Forwarder, Job

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        GetQueueUrlRequestTypeDef,
        SendMessageRequestTypeDef,
    )

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gateway-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# A deployer's answer is a small JSON object; anything longer is not relayed.
MAX_DEPLOYER_BODY = 1024 * 1024
# The longest wait between two attempts at the deployer (deployments.forward.retries + 1 in all,
# the first wait backoff_seconds): a deployer that is restarting takes seconds; waiting longer
# than this helps nobody.
FORWARD_MAX_DELAY = 30.0
_QUEUE_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_QUEUE_BUSY = {"ThrottlingException", "RequestThrottled", "ServiceUnavailable", "InternalError"}


def signature(secret: str, body: bytes) -> str:
    """The ``X-Gateway-Signature`` value: HMAC-SHA256 of the exact body bytes, in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes | None:
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > MAX_DEPLOYER_BODY:
            return None
    return bytes(data)


class HttpForwarder:
    """POSTs jobs to the deployer's ``url``.

    Every attempt carries the same ``Idempotency-Key`` (the deployment id), so a deployer that
    received an attempt whose answer was lost does not deploy twice. Connection errors, timeouts
    (``timeout`` seconds per attempt) and 5xx are tried again as ``retry`` says (built from
    ``deployments.forward.retries`` and ``backoff_seconds``).
    A 2xx answer's JSON object is returned; a 4xx is raised as ``DeployerRejected``, except 401 and
    407 (the deployer refusing the gateway itself, not the user's request), which are 502.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        secret: str,
        *,
        timeout: float,
        retry: RetryPolicy,
    ) -> None:
        self._http = http
        self._url = url
        self._host = urlsplit(url).hostname or "?"
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retry = retry

    async def forward(self, job: Job) -> dict[str, Any] | None:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            # The shared session does not decompress (it streams archives as they are).
            "Accept-Encoding": "identity",
            IDEMPOTENCY_HEADER: job.id,
            SIGNATURE_HEADER: signature(self._secret, job.body),
        }
        failure = ""
        async for attempt in self._retry.tries():
            try:
                async with self._http.post(
                    self._url,
                    data=job.body,
                    headers=headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    raw = await _read_limited(resp)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = type(exc).__name__
                log.warning("deployer %s: attempt %d failed: %s", self._host, attempt, failure)
                continue
            if 200 <= status < 300:
                return _json_object(raw)
            if status >= 500:
                failure = f"HTTP {status}"
                log.warning("deployer %s: attempt %d answered %d", self._host, attempt, status)
                continue
            if status in (401, 407):
                log.error("deployer %s refused the gateway's request: HTTP %d", self._host, status)
                raise DeployerUnavailable("the deployer refused the gateway's request")
            if 400 <= status < 500:
                log.info("deployer %s rejected deployment %s: HTTP %d", self._host, job.id, status)
                raise DeployerRejected(status, _json_object(raw))
            log.error("deployer %s answered HTTP %d", self._host, status)
            raise DeployerUnavailable(f"the deployer answered unexpectedly (HTTP {status})")
        log.error(
            "deployer %s: giving up on deployment %s after %d attempts (%s)",
            self._host,
            job.id,
            self._retry.attempts,
            failure,
        )
        raise DeployerUnavailable(
            f"the deployer is unavailable ({failure}, {self._retry.attempts} attempts)"
        )


class SqsForwarder:
    """Sends jobs to an SQS queue (``queue`` is its name or URL) through one aiobotocore client.

    A FIFO queue (name ending in ``.fifo``) gets ``MessageGroupId`` = the app, so one app's
    deployments stay in order, and ``MessageDeduplicationId`` = the deployment id. Needs the IAM
    permissions sqs:SendMessage and, for a queue given by name, sqs:GetQueueUrl.
    """

    def __init__(self, client: SQSClient, queue: str) -> None:
        self._sqs = client
        self._queue = queue
        self._queue_url: str | None = queue if "://" in queue else None
        self._fifo = queue.rstrip("/").endswith(".fifo")

    async def _url(self) -> str:
        if self._queue_url is None:
            resp = await self._sqs.get_queue_url(QueueName=self._queue)
            self._queue_url = str(resp["QueueUrl"])
        return self._queue_url

    async def forward(self, job: Job) -> dict[str, Any] | None:
        try:
            params: SendMessageRequestTypeDef = {
                "QueueUrl": await self._url(),
                "MessageBody": job.body.decode(),
            }
            if self._fifo:
                params["MessageGroupId"] = job.app
                params["MessageDeduplicationId"] = job.id
            await self._sqs.send_message(**params)
        except ClientError as exc:
            code = error_code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            log.error("deployment queue %s: %s (HTTP %s)", self._queue_name, code, status)
            if code in _QUEUE_MISSING:
                if "://" not in self._queue:
                    self._queue_url = None  # it may be created later: look it up again
                raise QueueFailed("the deployment queue does not exist") from None
            if code in _QUEUE_BUSY or status >= 500:
                raise QueueUnavailable(
                    "the deployment queue is unavailable, try again later"
                ) from None
            raise QueueFailed("the deployment queue refused the job") from None
        except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("deployment queue %s unreachable: %s", self._queue_name, type(exc).__name__)
            raise QueueUnavailable("the deployment queue is unreachable, try again later") from None
        log.info("deployment %s queued on %s", job.id, self._queue_name)
        return None

    @property
    def _queue_name(self) -> str:
        return self._queue.rstrip("/").rsplit("/", 1)[-1]

    async def check(self) -> None:
        """Return when the queue exists and answers; else ``QueueFailed``/``QueueUnavailable``.

        Asks GetQueueUrl (the permission a queue given by name needs anyway), for a queue given
        by URL with the account the URL names."""
        params: GetQueueUrlRequestTypeDef = {"QueueName": self._queue_name}
        if "://" in self._queue:
            owner = self._queue.rstrip("/").rsplit("/", 2)
            if len(owner) == 3 and owner[1].isdigit():
                params["QueueOwnerAWSAccountId"] = owner[1]
        try:
            await self._sqs.get_queue_url(**params)
        except ClientError as exc:
            if error_code(exc) in _QUEUE_MISSING:
                raise QueueFailed("the deployment queue does not exist") from None
            raise QueueUnavailable("the deployment queue does not answer") from None
        except (BotoCoreError, aiohttp.ClientError, TimeoutError):
            raise QueueUnavailable("the deployment queue is unreachable") from None


class ConfiguredForwarder:
    """The forwarder ``deployments.forward`` describes, built before the event loop runs;
    ``open()`` (in the app's ``cleanup_ctx``, after the connections) makes it usable."""

    def __init__(self, config: Config, connections: Connections) -> None:
        self._config = config
        self._connections = connections
        self._forwarder: Forwarder | None = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[None]:
        forward = self._config.deployments.forward
        if forward.type == "http":
            assert forward.url and forward.secret, "validated by ForwardConfig"
            self._forwarder = HttpForwarder(
                self._connections.http,
                forward.url,
                forward.secret,
                timeout=forward.timeout,
                retry=RetryPolicy(
                    attempts=forward.retries + 1,
                    base_delay=forward.backoff_seconds,
                    max_delay=FORWARD_MAX_DELAY,
                ),
            )
            yield
            return
        assert forward.queue, "validated by ForwardConfig"
        async with open_sqs_client(self._config) as client:
            self._forwarder = SqsForwarder(client, forward.queue)
            yield

    async def forward(self, job: Job) -> dict[str, Any] | None:
        assert self._forwarder is not None, "ConfiguredForwarder.open() has not run"
        return await self._forwarder.forward(job)

    async def check(self) -> None:
        """Readiness: the deployment queue answers. A deployer behind ``http`` is not probed:
        it is reached (with retries) only when a deployment comes."""
        if isinstance(self._forwarder, SqsForwarder):
            await self._forwarder.check()
