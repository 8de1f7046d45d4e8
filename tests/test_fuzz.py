"""Fuzzing: schemathesis over the served /v1/openapi.json, every operation.

A real ``gateway serve`` process on the moto server; each operation gets a bounded number of
generated requests, valid and invalid (hypothesis, derandomized: the same cases every run). No
answer may be a 5xx, and every answer must have a documented status, content type, headers and
body schema. For source URLs, half the cases carry a real id and a live token instead of
generated ones, so the body, Range and conditional headers reach the upload and download code.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.config import config_from_dict
from gateway.server.http.openapi import document

from .helpers import MOTO_CREDENTIALS, TOKEN, ServedGateway, config_dict, serve, sqs_forward
from .ports import free_port

# Bounded: about 13 operations x 2 modes x this many requests, a few seconds in all.
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SOURCE_PATH = "/v1/sources/{id}"


def operations() -> list[tuple[str, str, GenerationMode]]:
    """Every (method, path) of the document, read from the same code that serves it, and the
    generation modes that apply: invalid data only where there is an input to make invalid."""
    config = config_from_dict(config_dict("http://127.0.0.1:1", "bucket", 8080), env={})
    doc = document(config)
    cases = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            cases.append((method, path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                cases.append((method, path, GenerationMode.NEGATIVE))
    return sorted(cases)


@pytest.fixture(scope="module")
def fuzzed(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One gateway process for the whole module, its bucket and queue, and a live source."""
    aws = {"endpoint_url": moto_endpoint, "region_name": "us-east-1", **MOTO_CREDENTIALS}
    s3 = boto3.client("s3", **aws)
    bucket = f"fuzz-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    queue = f"fuzz-{uuid.uuid4().hex[:12]}"
    boto3.client("sqs", **aws).create_queue(QueueName=queue)
    port = free_port()
    config = config_dict(moto_endpoint, bucket, port)
    config["sources"].update({"allow_small_parts": False, "part_size_bytes": 5 * 1024 * 1024})
    config["deployments"] = sqs_forward(queue, moto_endpoint)
    config["logging"] = {"level": "warning", "json": True}
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_CONFIG_FILE": str(workdir / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    served = serve(config, workdir, env=env)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        source = requests.post(f"{served.url}/v1/sources", headers=auth, timeout=10).json()
        put = requests.put(source["upload_url"], data=b"\x1f\x8b" + os.urandom(3000), timeout=10)
        assert put.status_code == 200
        schema = schemathesis.openapi.from_url(f"{served.url}/v1/openapi.json")
        yield served, schema, source
    finally:
        served.stop()
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        s3.delete_bucket(Bucket=bucket)


def live_token(source: dict[str, Any], method: str) -> str:
    url = source["upload_url"] if method == "put" else source["download_url"]
    return str(url.split("token=", 1)[1])


@pytest.mark.parametrize(("method", "path", "mode"), operations())
def test_fuzz_operation(fuzzed: Any, method: str, path: str, mode: GenerationMode) -> None:
    served, schema, source = fuzzed
    served_gateway: ServedGateway = served
    operation = schema[path][method.upper()]
    session = requests.Session()

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES * 2 if path == SOURCE_PATH else MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    # Most cases use the live source (the deeper code), about a quarter a made-up id and token.
    @hypothesis.given(
        case=operation.as_strategy(generation_mode=mode),
        live=st.sampled_from([True, True, True, False]),
    )
    def run(case: Any, live: bool) -> None:
        if path == SOURCE_PATH and live:
            case.path_parameters = {**(case.path_parameters or {}), "id": source["id"]}
            case.query = {**(case.query or {}), "token": live_token(source, method)}
        headers = {"Authorization": f"Bearer {TOKEN}"} if mode is GenerationMode.POSITIVE else {}
        response = case.call(
            base_url=served_gateway.url,
            session=session,
            headers=headers,
            timeout=15,
            allow_redirects=False,
        )
        case.validate_response(response, checks=CHECKS)

    run()
