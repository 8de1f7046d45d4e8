"""Configuration: one YAML file, validated into frozen dataclasses.

Every key's default and meaning is documented once, in ``config.example.yaml``. ``load_config`` is
the only entry point; it raises ``ConfigError`` naming the key path of the first problem it finds.
``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the environment.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from gateway.config_auth import JwtConfig as JwtConfig
from gateway.config_auth import LimitsConfig as LimitsConfig
from gateway.config_errors import ConfigError as ConfigError
from gateway.config_errors import join_path
from gateway.config_resumable import ResumableConfig as ResumableConfig
from gateway.config_types import build
from gateway.envsubst import EnvReferenceError, substitute

# S3 refuses parts under 5 MiB (except the last) and allows at most 10,000 of them.
S3_MIN_PART_SIZE = 5 * 1024 * 1024
S3_MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
# Worker processes of one `gateway serve`: more than the cores of a large machine is a mistake.
MAX_WORKERS = 64
# Secrets shorter than this are too easy to guess for HMAC keys that guard every URL.
MIN_SECRET_KEY_LENGTH = 16
# config.example.yaml's signing key when GATEWAY_SECRET_KEY is unset, so that the file serves and
# checks as it is. It is public: refused unless storage.embedded (in memory, local use only).
DEV_SECRET_KEY = "local-development-only-secret"
SECRET_KEY_ENV = "GATEWAY_SECRET_KEY"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Required: the base of every URL handed out is configured, never guessed (SPEC 4).
    public_url: str = ""
    shutdown_timeout: float = 30.0
    body_timeout: float = 60.0
    header_timeout: float = 15.0
    send_timeout: float = 60.0
    min_upload_rate: int = 16 * 1024
    trusted_proxies: tuple[str, ...] = ()
    workers: int = 1
    readiness_requires: tuple[Literal["storage", "deployer"], ...] = ("storage",)
    readiness_interval: float = 5.0

    def validate(self, path: str) -> None:
        if not self.public_url:
            raise ConfigError(f"{path}.public_url", "required")
        parts = urlsplit(self.public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{path}.public_url", "must be an absolute http(s) URL")
        if parts.query or parts.fragment:
            raise ConfigError(f"{path}.public_url", "must not have a query or fragment")
        for name in ("body_timeout", "header_timeout", "send_timeout", "readiness_interval"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "must be positive")
        if self.min_upload_rate < 0:
            raise ConfigError(f"{path}.min_upload_rate", "must not be negative")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{path}.port", "must be between 0 and 65535")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"{path}.workers", f"must be between 1 and {MAX_WORKERS}")
        if self.workers > 1 and self.port == 0:
            raise ConfigError(f"{path}.port", "0 (any free port) would give each worker its own")
        for i, cidr in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"{path}.trusted_proxies[{i}]", "not a CIDR") from None

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/")


@dataclass(frozen=True)
class TokenConfig:
    name: str
    token: str
    apps: tuple[str, ...] = ("*",)
    # Who the token is, for GET /v1/users/self and a deployment's pusher (optional).
    email: str | None = None
    fullname: str | None = None

    def validate(self, path: str) -> None:
        if self.token.startswith("sha256:"):
            if not re.fullmatch(r"[0-9a-f]{64}", self.token[7:]):
                raise ConfigError(f"{path}.token", "sha256: must be followed by 64 hex digits")
        elif len(self.token) < 8:
            raise ConfigError(f"{path}.token", "must be at least 8 characters")

    @property
    def digest(self) -> bytes:
        """The SHA-256 of the token, which is all the gateway keeps to compare against."""
        if self.token.startswith("sha256:"):
            return bytes.fromhex(self.token[7:])
        return hashlib.sha256(self.token.encode()).digest()


# The platform's clients renew a JWT that has less than 5 minutes left before every call, so a
# shorter life would make them exchange on every request; a day bounds what a leaked JWT is worth.
MIN_EXCHANGE_TTL = 300
MAX_EXCHANGE_TTL = 86400


@dataclass(frozen=True)
class AuthConfig:
    tokens: tuple[TokenConfig, ...] = ()
    exchange_ttl_seconds: int = 3600
    jwt: JwtConfig | None = None
    limits: LimitsConfig = field(default_factory=LimitsConfig)

    def validate(self, path: str) -> None:
        if not MIN_EXCHANGE_TTL <= self.exchange_ttl_seconds <= MAX_EXCHANGE_TTL:
            raise ConfigError(
                f"{path}.exchange_ttl_seconds",
                f"must be between {MIN_EXCHANGE_TTL} and {MAX_EXCHANGE_TTL}",
            )
        names = [t.name for t in self.tokens]
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ConfigError(f"{path}.tokens[{i}].name", f"duplicate token name {name!r}")


@dataclass(frozen=True)
class SigningConfig:
    secret_keys: tuple[str, ...]

    def validate(self, path: str) -> None:
        if not self.secret_keys:
            raise ConfigError(f"{path}.secret_keys", "at least one key is required")
        for i, key in enumerate(self.secret_keys):
            if len(key) < MIN_SECRET_KEY_LENGTH:
                raise ConfigError(
                    f"{path}.secret_keys[{i}]",
                    f"must be at least {MIN_SECRET_KEY_LENGTH} characters",
                )


@dataclass(frozen=True)
class SourcesConfig:
    ttl_seconds: int = 600
    max_size_bytes: int = 314572800
    part_size_bytes: int = 8 * 1024 * 1024
    max_buffer_bytes: int = 256 * 1024 * 1024
    download_mode: Literal["proxy", "redirect"] = "proxy"
    download_splice: bool = True
    archive_check: Literal["enforce", "report", "off"] = "enforce"
    max_inflated_bytes: int = 4 * 1024**3
    max_entries: int = 200_000
    archive_check_cpu_seconds: float = 60.0
    archive_check_threads: int = 2
    # Below S3's minimum part size only for tests against moto (it checks sizes at completion only).
    allow_small_parts: bool = False
    resumable: ResumableConfig = field(default_factory=ResumableConfig)

    def validate(self, path: str) -> None:
        positive = ("ttl_seconds", "max_inflated_bytes", "max_entries", "archive_check_cpu_seconds")
        for key in (*positive, "archive_check_threads"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{path}.{key}", "must be positive")
        if self.max_size_bytes < 0:
            raise ConfigError(f"{path}.max_size_bytes", "must not be negative")
        if not self.allow_small_parts and self.part_size_bytes < S3_MIN_PART_SIZE:
            raise ConfigError(f"{path}.part_size_bytes", "must be at least 5 MiB (S3's minimum)")
        if self.part_size_bytes <= 0 or self.part_size_bytes > S3_MAX_PART_SIZE:
            raise ConfigError(f"{path}.part_size_bytes", "must be between 5 MiB and 5 GiB")
        if self.max_buffer_bytes < self.part_size_bytes:
            raise ConfigError(f"{path}.max_buffer_bytes", "must be at least part_size_bytes")


@dataclass(frozen=True)
class StorageConfig:
    bucket: str = ""  # required
    prefix: str = "sources/"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    embedded: bool = False
    ensure_lifecycle: bool = True
    expire_after_days: int = 1
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def validate(self, path: str) -> None:
        if not self.bucket:
            raise ConfigError(f"{path}.bucket", "required")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise ConfigError(f"{path}.bucket", "not a valid S3 bucket name")
        if self.expire_after_days < 1:
            raise ConfigError(f"{path}.expire_after_days", "must be at least 1")
        if self.max_attempts < 1:
            raise ConfigError(f"{path}.max_attempts", "must be at least 1")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ConfigError(
                f"{path}.secret_access_key", "access_key_id and secret_access_key go together"
            )


@dataclass(frozen=True)
class ForwardConfig:
    type: Literal["sqs", "http"] = "sqs"
    queue: str | None = "deployments"
    url: str | None = None
    secret: str | None = None
    timeout: float = 10.0
    retries: int = 3
    backoff_seconds: float = 0.5
    # sqs: the SQS endpoint and region; null means storage's endpoint when storage is embedded
    # (else AWS's) and storage.region.
    endpoint_url: str | None = None
    region: str | None = None

    def validate(self, path: str) -> None:
        if self.type == "http":
            if not self.url:
                raise ConfigError(f"{path}.url", "required when type is http")
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{path}.url", "must be an absolute http(s) URL")
            if not self.secret:
                raise ConfigError(f"{path}.secret", "required when type is http")
        elif not self.queue:
            raise ConfigError(f"{path}.queue", "required when type is sqs")
        if self.retries < 0:
            raise ConfigError(f"{path}.retries", "must not be negative")
        if self.timeout <= 0:
            raise ConfigError(f"{path}.timeout", "must be positive")
        if self.backoff_seconds < 0:
            raise ConfigError(f"{path}.backoff_seconds", "must not be negative")


@dataclass(frozen=True)
class DeploymentsConfig:
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    allowed_hosts: tuple[str, ...] = ()
    allowed_http_hosts: tuple[str, ...] = ()
    fetch_url_ttl_seconds: int = 3600
    prefix: str = "deployments/"
    expire_after_days: int = 30
    events_ttl_seconds: int = 86400
    max_output_bytes: int = 4194304
    poll_interval: float = 1.0
    stream_auth_timeout: float = 10.0
    stream_replay_seconds: int = 3600
    max_streams: int = 1000
    demo_deployer: bool = False

    def validate(self, path: str) -> None:
        # S3 refuses presigned URLs valid for more than 7 days.
        if not 1 <= self.fetch_url_ttl_seconds <= 7 * 24 * 3600:
            raise ConfigError(f"{path}.fetch_url_ttl_seconds", "must be between 1 and 604800")
        if not self.prefix or not self.prefix.endswith("/"):
            raise ConfigError(f"{path}.prefix", "must be a non-empty key prefix ending with '/'")
        if self.expire_after_days < 1:
            raise ConfigError(f"{path}.expire_after_days", "must be at least 1")
        if self.events_ttl_seconds < 1:
            raise ConfigError(f"{path}.events_ttl_seconds", "must be at least 1")
        if self.max_output_bytes < 1024:
            raise ConfigError(f"{path}.max_output_bytes", "must be at least 1024")
        # Each follower lists the bucket once per interval: faster would cost more than it shows.
        if not 0.1 <= self.poll_interval <= 60:
            raise ConfigError(f"{path}.poll_interval", "must be between 0.1 and 60 seconds")
        if not 0 < self.stream_auth_timeout <= 300:
            raise ConfigError(f"{path}.stream_auth_timeout", "must be between 0 and 300 seconds")
        if self.stream_replay_seconds < 0:
            raise ConfigError(f"{path}.stream_replay_seconds", "must not be negative")
        if self.max_streams < 1:
            raise ConfigError(f"{path}.max_streams", "must be at least 1")
        if self.demo_deployer and self.forward.type != "sqs":
            raise ConfigError(f"{path}.demo_deployer", "takes its jobs from an sqs forward queue")


@dataclass(frozen=True)
class CorsConfig:
    allowed_origins: tuple[str, ...] = ()
    max_age: int = 600


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    token: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    json: bool = True

    @property
    def access_enabled(self) -> bool:
        """Access lines are written at ``info``."""
        return self.level in ("debug", "info")


@dataclass(frozen=True)
class Config:
    signing: SigningConfig
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    deployments: DeploymentsConfig = field(default_factory=DeploymentsConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def secrets(self) -> tuple[str, ...]:
        """Every secret the file holds in clear (API tokens not given as ``sha256:``, signing
        keys, the S3 secret key, the deployer's shared secret): the logs mask each wherever it
        appears, even unlabelled."""
        tokens = (t.token for t in self.auth.tokens if not t.token.startswith("sha256:"))
        others = (self.storage.secret_access_key, self.deployments.forward.secret)
        return tuple(s for s in (*tokens, *self.signing.secret_keys, *others) if s)

    def validate(self, path: str) -> None:
        if DEV_SECRET_KEY in self.signing.secret_keys and not self.storage.embedded:
            index = self.signing.secret_keys.index(DEV_SECRET_KEY)
            raise ConfigError(
                join_path(path, f"signing.secret_keys[{index}]"),
                "the development key of config.example.yaml is public and only accepted with"
                f" storage.embedded: true; set {SECRET_KEY_ENV} (the same on every instance)"
                " or list keys of your own",
            )
        # Each prefix has its own expiry rule: one inside the other would expire by both.
        archives, records = self.storage.prefix, self.deployments.prefix
        if archives.startswith(records) or records.startswith(archives):
            raise ConfigError(
                join_path(path, "deployments.prefix"),
                f"must not overlap storage.prefix ({archives!r})",
            )
        uploads = self.sources.resumable.prefix
        for other, name in ((archives, "storage.prefix"), (records, "deployments.prefix")):
            if uploads.startswith(other) or other.startswith(uploads):
                raise ConfigError(
                    join_path(path, "sources.resumable.prefix"),
                    f"must not overlap {name} ({other!r})",
                )


def config_from_dict(data: Any, env: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed YAML document into a ``Config``; ``ConfigError`` on the first fault."""
    try:
        substituted = substitute(data, os.environ if env is None else env)
    except EnvReferenceError as exc:
        raise ConfigError(exc.path, exc.problem) from None
    config: Config = build(Config, substituted, "")
    return config


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate the YAML file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    return config_from_dict(data, env)
