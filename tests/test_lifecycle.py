"""The lifecycle rule: set at start and by `gateway lifecycle`, merged, idempotent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.config import StorageConfig
from gateway.server.adapters.aws import open_s3_client
from gateway.server.adapters.lifecycle import (
    MERGE_RETRY,
    LifecycleConflict,
    ensure_lifecycle,
    gateway_rule,
    merge_rules,
    rule_id,
)

from .helpers import MOTO_CREDENTIALS, SECRET, StartGateway

OTHER_RULE = {
    "ID": "keep-logs-30-days",
    "Filter": {"Prefix": "logs/"},
    "Status": "Enabled",
    "Expiration": {"Days": 30},
}


def rules_of(s3: Any, bucket: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return rules


def by_id(rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["ID"]: r for r in rules}


def test_merge_replaces_only_its_own_rule() -> None:
    rule = gateway_rule(StorageConfig(prefix="src/", expire_after_days=2))
    stale = {**rule, "Expiration": {"Days": 9}}
    assert merge_rules([OTHER_RULE], rule) == [OTHER_RULE, rule]
    assert merge_rules([stale, OTHER_RULE], rule) == [rule, OTHER_RULE]
    assert merge_rules([], rule) == [rule]


async def test_rule_is_set_at_start_and_others_are_kept(
    start_gateway: StartGateway, s3: Any, bucket: str
) -> None:
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [OTHER_RULE]}
    )
    await start_gateway({"storage": {"ensure_lifecycle": True, "expire_after_days": 2}})
    rules = by_id(rules_of(s3, bucket))
    assert set(rules) == {
        "keep-logs-30-days",
        rule_id("sources/"),
        rule_id("deployments/"),
        rule_id("uploads/"),
    }
    uploads = rules[rule_id("uploads/")]  # resumable uploads: a day after their life
    assert uploads["Filter"] == {"Prefix": "uploads/"}
    assert uploads["Expiration"]["Days"] == 2
    assert uploads["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    ours = rules[rule_id("sources/")]
    assert ours["Filter"] == {"Prefix": "sources/"}
    assert ours["Status"] == "Enabled"
    assert ours["Expiration"]["Days"] == 2
    # A resumable upload's parts may complete at the source's key: never aborted before the
    # upload's life (and its margin) is over.
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    assert rules["keep-logs-30-days"]["Expiration"]["Days"] == 30
    records = rules[rule_id("deployments/")]
    assert records["Filter"] == {"Prefix": "deployments/"}
    assert records["Expiration"]["Days"] == 30

    # A second instance (or restart) with other settings updates the rules, keeps the other.
    await start_gateway(
        {
            "storage": {"ensure_lifecycle": True, "expire_after_days": 3},
            "deployments": {"expire_after_days": 7},
            "sources": {"resumable": {"ttl_seconds": 3 * 86400}},
        }
    )
    rules = by_id(rules_of(s3, bucket))
    assert len(rules) == 4
    assert rules[rule_id("uploads/")]["Expiration"]["Days"] == 4
    assert rules[rule_id("sources/")]["Expiration"]["Days"] == 3
    assert rules[rule_id("sources/")]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 4
    assert rules[rule_id("deployments/")]["Expiration"]["Days"] == 7


async def test_without_resumable_uploads_the_sources_rule_aborts_after_a_day(
    start_gateway: StartGateway, s3: Any, bucket: str
) -> None:
    await start_gateway(
        {"storage": {"ensure_lifecycle": True}, "sources": {"resumable": {"enabled": False}}}
    )
    ours = by_id(rules_of(s3, bucket))[rule_id("sources/")]
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


async def test_no_rule_when_disabled(
    start_gateway: StartGateway, s3: Any, bucket: str, http: aiohttp.ClientSession
) -> None:
    await start_gateway({"storage": {"ensure_lifecycle": False}})
    try:
        rules = rules_of(s3, bucket)
    except s3.exceptions.ClientError as exc:
        assert "NoSuchLifecycleConfiguration" in str(exc)
    else:
        assert rules == []


async def test_missing_bucket_does_not_stop_the_start(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        {"storage": {"ensure_lifecycle": True, "bucket": "no-such-bucket-for-lifecycle"}}
    )
    async with http.post(f"{gateway.url}/v1/sources", headers=gateway.auth) as resp:
        assert resp.status == 201


def run_cli(config_file: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "lifecycle", action, "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_DISABLED": "true"},
    )


def write_config(tmp_path: Path, **storage: Any) -> Path:
    """A configuration file for the `gateway lifecycle` command with this storage section."""
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "signing": {"secret_keys": [SECRET]},
                "server": {"public_url": "http://127.0.0.1:8080"},
                "storage": storage,
            }
        )
    )
    return config_file


def test_cli_apply_and_show(tmp_path: Path, moto_endpoint: str, s3: Any, bucket: str) -> None:
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [OTHER_RULE]}
    )
    config_file = write_config(
        tmp_path,
        bucket=bucket,
        endpoint_url=moto_endpoint,
        access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
        secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
    )
    shown = run_cli(config_file, "show")
    assert shown.returncode == 0, shown.stderr
    assert rule_id("sources/") not in shown.stdout
    assert "keep-logs-30-days" in shown.stdout

    applied = run_cli(config_file, "apply")
    assert applied.returncode == 0, applied.stderr
    assert "lifecycle rules applied" in applied.stderr
    assert rule_id("sources/") in applied.stdout
    assert rule_id("deployments/") in applied.stdout
    again = run_cli(config_file, "apply")
    assert "already in place" in again.stderr  # idempotent
    assert set(by_id(rules_of(s3, bucket))) == {
        "keep-logs-30-days",
        rule_id("sources/"),
        rule_id("deployments/"),
        rule_id("uploads/"),
    }
    shown = run_cli(config_file, "show")
    assert rule_id("deployments/") in shown.stdout
    assert rule_id("uploads/") in shown.stdout


def test_cli_reports_storage_errors(tmp_path: Path, moto_endpoint: str) -> None:
    config_file = write_config(
        tmp_path,
        bucket="no-such-bucket-cli",
        endpoint_url=moto_endpoint,
        access_key_id="x",
        secret_access_key="y",
        max_attempts=1,
    )
    result = run_cli(config_file, "show")
    assert result.returncode == 1
    assert result.stderr.startswith("gateway: storage error:")
    assert "NoSuchBucket" in result.stderr


class _RacingWriter:
    """The real S3 client, except that right after the gateway's first write another writer
    (say an instance with another prefix) puts the rules it had read before, without ours."""

    def __init__(self, s3: Any, other_rules: list[dict[str, Any]], races: int = 1) -> None:
        self._s3 = s3
        self._other_rules = other_rules
        self._races = races

    async def get_bucket_lifecycle_configuration(self, **kwargs: Any) -> Any:
        return await self._s3.get_bucket_lifecycle_configuration(**kwargs)

    async def put_bucket_lifecycle_configuration(self, **kwargs: Any) -> Any:
        answer = await self._s3.put_bucket_lifecycle_configuration(**kwargs)
        if self._races:
            self._races -= 1
            await self._s3.put_bucket_lifecycle_configuration(
                Bucket=kwargs["Bucket"], LifecycleConfiguration={"Rules": self._other_rules}
            )
        return answer


@pytest.mark.parametrize("races", [1, 5])
async def test_concurrent_writer_does_not_drop_the_rule(
    s3: Any, bucket: str, moto_endpoint: str, races: int
) -> None:
    s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [OTHER_RULE]}
    )
    theirs = [OTHER_RULE, {**OTHER_RULE, "ID": "their-new-rule", "Filter": {"Prefix": "x/"}}]
    config = StorageConfig(
        bucket=bucket,
        endpoint_url=moto_endpoint,
        access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
        secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
    )
    async with open_s3_client(config) as client:
        racing = _RacingWriter(client, theirs, races)
        if races >= MERGE_RETRY.attempts:
            with pytest.raises(LifecycleConflict):
                await ensure_lifecycle(racing, config)
            return
        assert await ensure_lifecycle(racing, config) is True
    rules = by_id(rules_of(s3, bucket))
    assert set(rules) == {"keep-logs-30-days", "their-new-rule", rule_id("sources/")}


@pytest.mark.parametrize("action", ["show", "apply"])
def test_cli_with_the_embedded_store_explains_instead_of_starting_one(
    tmp_path: Path, action: str
) -> None:
    config_file = write_config(tmp_path, bucket="sources", embedded=True)
    result = run_cli(config_file, action)
    assert result.returncode == 2
    assert "lives inside `gateway serve`" in result.stderr
    assert result.stdout == ""
