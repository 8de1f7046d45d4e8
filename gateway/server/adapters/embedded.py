"""The embedded local default: moto's S3 (and SQS) server in-process, on a loopback port.

For ``make run`` and trying the gateway out; data lives in memory and is gone when it stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

from gateway.config import Config, ConfigError

log = logging.getLogger(__name__)

# moto accepts any credentials; these only keep botocore from searching the machine for some.
EMBEDDED_CREDENTIALS = ("embedded", "embedded-secret")


@contextlib.contextmanager
def embedded_services(config: Config) -> Iterator[Config]:
    """Start moto on 127.0.0.1, create the bucket (and the SQS queue), yield the config using it."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise ConfigError(
            "storage.embedded",
            "needs moto: pip install 'sources-gateway[embedded]'",
        ) from None
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        key_id, secret = EMBEDDED_CREDENTIALS
        storage = dataclasses.replace(
            config.storage, endpoint_url=endpoint, access_key_id=key_id, secret_access_key=secret
        )
        aws = {
            "endpoint_url": endpoint,
            "region_name": storage.region,
            "aws_access_key_id": key_id,
            "aws_secret_access_key": secret,
        }
        boto3.client("s3", **aws).create_bucket(Bucket=storage.bucket)
        forward = config.deployments.forward
        if forward.type == "sqs" and forward.queue and "://" not in forward.queue:
            attributes = {"FifoQueue": "true"} if forward.queue.endswith(".fifo") else {}
            boto3.client("sqs", **aws).create_queue(QueueName=forward.queue, Attributes=attributes)
        # The README's walk-through reads the deployments queue at this address.
        log.warning(
            "embedded S3 and SQS at %s (in memory, for local use only): bucket %r",
            endpoint,
            storage.bucket,
        )
        yield dataclasses.replace(config, storage=storage)
    finally:
        server.stop()
