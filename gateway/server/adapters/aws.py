"""The one place that builds S3 and SQS clients from the configuration, and reads botocore's
error codes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.exceptions import ClientError
from botocore.handlers import add_expect_header

from gateway.config import Config, StorageConfig

if TYPE_CHECKING:  # the stubs are a development dependency (pyproject's dev extras)
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sqs import SQSClient


def s3_client_config(config: StorageConfig) -> AioConfig:
    addressing = "path" if config.embedded else config.addressing_style
    return AioConfig(
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries={"max_attempts": config.max_attempts, "mode": "standard"},
        s3={"addressing_style": addressing},
        signature_version="s3v4",
    )


def _kwargs(
    region: str, config: AioConfig, endpoint: str | None, storage: StorageConfig
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"region_name": region, "config": config}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    # Static credentials when the storage section has them, else botocore's usual chain.
    if storage.access_key_id and storage.secret_access_key:
        kwargs["aws_access_key_id"] = storage.access_key_id
        kwargs["aws_secret_access_key"] = storage.secret_access_key
    return kwargs


def client_kwargs(config: StorageConfig) -> dict[str, Any]:
    """Keyword arguments for ``AioSession.create_client`` built from the storage section."""
    return _kwargs(config.region, s3_client_config(config), config.endpoint_url, config)


@contextlib.asynccontextmanager
async def open_s3_client(config: StorageConfig) -> AsyncIterator[S3Client]:
    async with AioSession().create_client("s3", **client_kwargs(config)) as client:
        # botocore asks S3 for "100 Continue" before sending any body, and aiohttp waits for that
        # answer with no timeout at all: a stalled endpoint would hang the upload for ever. Parts
        # are bounded buffers, so sending them without asking first costs little.
        client.meta.events.unregister("before-call.s3", add_expect_header)
        yield client


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def sqs_client_kwargs(config: Config) -> dict[str, Any]:
    """Arguments for the SQS client: ``deployments.forward`` first, then the storage section.

    The endpoint defaults to the storage endpoint only when storage is embedded (moto serves
    both); credentials are the storage section's static ones when set, else the AWS chain."""
    forward, storage = config.deployments.forward, config.storage
    settings = AioConfig(
        connect_timeout=forward.timeout,
        read_timeout=forward.timeout,
        retries={"max_attempts": forward.retries + 1, "mode": "standard"},
    )
    endpoint = forward.endpoint_url or (storage.endpoint_url if storage.embedded else None)
    return _kwargs(forward.region or storage.region, settings, endpoint, storage)


@contextlib.asynccontextmanager
async def open_sqs_client(config: Config) -> AsyncIterator[SQSClient]:
    async with AioSession().create_client("sqs", **sqs_client_kwargs(config)) as client:
        yield client
