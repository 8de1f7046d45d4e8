"""The bucket lifecycle rule that deletes uploaded archives, merged into the bucket's own rules.

S3 keeps one lifecycle configuration per bucket, replaced whole by each write: the gateway reads
it, replaces or adds only its own rule (found by its ID), and writes back every other rule as is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

from botocore.exceptions import ClientError

from gateway.config import Config, DeploymentsConfig, ResumableConfig, StorageConfig
from gateway.retry import RetryPolicy

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import (
        LifecycleRuleOutputTypeDef,
        LifecycleRuleTypeDef,
    )

    # A rule as the gateway writes it, or as S3 gives one back (both may be written back).
    Rule: TypeAlias = LifecycleRuleTypeDef | LifecycleRuleOutputTypeDef
from gateway.server.adapters.aws import error_code

log = logging.getLogger(__name__)

# Incomplete multipart uploads (a crashed instance's) are invisible but billed: drop them then.
ABORT_INCOMPLETE_AFTER_DAYS = 1
RESUMABLE_DAY = 86400
# Past an upload's end, its objects stay this long: a request that began just before its
# token expired may still be writing.
RESUMABLE_MARGIN_DAYS = 1
# Merging the rules again when another writer replaced them meanwhile: they race only with other
# writers of the same bucket's configuration (instances starting together, an operator).
MERGE_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=2.0)


class LifecycleConflict(Exception):
    """Someone else kept rewriting the bucket's lifecycle rules while the gateway merged its own."""


def rule_id(prefix: str) -> str:
    return f"sources-gateway-expire:{prefix}"


def gateway_rule(
    config: StorageConfig, abort_after_days: int = ABORT_INCOMPLETE_AFTER_DAYS
) -> LifecycleRuleTypeDef:
    """The rule of SPEC: expire ``prefix`` after ``expire_after_days``, abort stale uploads."""
    return {
        "ID": rule_id(config.prefix),
        "Filter": {"Prefix": config.prefix},
        "Status": "Enabled",
        "Expiration": {"Days": config.expire_after_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_after_days},
    }


def resumable_days(config: ResumableConfig) -> int:
    """A day after the longest a resumable upload may live (S3 counts whole days)."""
    return -(-config.ttl_seconds // RESUMABLE_DAY) + RESUMABLE_MARGIN_DAYS


def abort_after_days(config: Config) -> int:
    """When the sources rule aborts unfinished multipart uploads: a resumable upload's parts may
    complete at the source's key, so never before such an upload's life is over."""
    if not config.sources.resumable.enabled:
        return ABORT_INCOMPLETE_AFTER_DAYS
    return max(ABORT_INCOMPLETE_AFTER_DAYS, resumable_days(config.sources.resumable))


def deployments_rule(config: DeploymentsConfig) -> LifecycleRuleTypeDef:
    """Deployment records and their events expire after ``expire_after_days``, on their own
    prefix, so their life does not depend on the archives'."""
    return {
        "ID": rule_id(config.prefix),
        "Filter": {"Prefix": config.prefix},
        "Status": "Enabled",
        "Expiration": {"Days": config.expire_after_days},
    }


def resumable_rule(config: ResumableConfig) -> LifecycleRuleTypeDef:
    """Resumable uploads' state, tail and staging objects, and their unfinished multipart
    uploads, go a day after the longest an upload may live (S3 counts whole days)."""
    days = resumable_days(config)
    return {
        "ID": rule_id(config.prefix),
        "Filter": {"Prefix": config.prefix},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    }


def rules_besides_sources(config: Config) -> list[LifecycleRuleTypeDef]:
    """The rules the gateway keeps on its bucket beside ``gateway_rule``'s."""
    return [deployments_rule(config.deployments), resumable_rule(config.sources.resumable)]


def _same_rule(a: Rule, b: Rule) -> bool:
    keys = ("ID", "Filter", "Status", "Expiration", "AbortIncompleteMultipartUpload")
    return all(a.get(k) == b.get(k) for k in keys)


def merge_rules(existing: Sequence[Rule], rule: Rule) -> list[Rule]:
    """``existing`` with ``rule`` in place of the rule with the same ID, or appended."""
    merged = [r for r in existing if r.get("ID") != rule["ID"]]
    position = next((i for i, r in enumerate(existing) if r.get("ID") == rule["ID"]), len(merged))
    merged.insert(position, rule)
    return merged


async def get_rules(s3: S3Client, bucket: str) -> list[LifecycleRuleOutputTypeDef]:
    try:
        resp = await s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) == "NoSuchLifecycleConfiguration":
            return []
        raise
    return list(resp.get("Rules", []))


async def ensure_lifecycle(
    s3: S3Client,
    config: StorageConfig,
    also: Sequence[LifecycleRuleTypeDef] = (),
    abort_after_days: int = ABORT_INCOMPLETE_AFTER_DAYS,
) -> bool:
    """Make sure the bucket has the gateway's rule (and the rules in ``also``, such as
    ``deployments_rule``); return True if the configuration changed.

    S3 has no conditional write for lifecycle rules: after writing, the rules are read back, and
    if another writer (an instance with another prefix, an operator) replaced them meanwhile, the
    merge is done again on top of theirs, a few times at most."""
    wanted = [gateway_rule(config, abort_after_days), *also]
    changed = False
    async for _ in MERGE_RETRY.tries():
        existing = await get_rules(s3, config.bucket)
        if all(any(_same_rule(r, rule) for r in existing) for rule in wanted):
            return changed
        rules: list[Rule] = list(existing)
        for rule in wanted:
            rules = merge_rules(rules, rule)
        await s3.put_bucket_lifecycle_configuration(
            Bucket=config.bucket, LifecycleConfiguration={"Rules": rules}
        )
        changed = True
        written = {r.get("ID") for r in await get_rules(s3, config.bucket)}
        if written >= {r.get("ID") for r in rules}:
            log.info(
                "lifecycle rules %s set on bucket %s (%d other rules kept)",
                ", ".join(rule["ID"] for rule in wanted),
                config.bucket,
                len(rules) - len(wanted),
            )
            return True
    raise LifecycleConflict(
        f"the lifecycle rules of bucket {config.bucket} kept changing while being merged"
    )
