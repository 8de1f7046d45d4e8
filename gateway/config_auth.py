"""The ``auth.jwt`` and ``auth.limits`` sections (``gateway.config`` holds the rest); their
defaults and meaning are documented in ``config.example.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.config_errors import ConfigError

# Public-key algorithms only: an HMAC algorithm would take the provider's public key (which
# anyone can fetch) for a shared secret, and "none" is no signature at all.
JWT_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


@dataclass(frozen=True)
class JwtConfig:
    issuer: str
    audience: str
    jwks_url: str
    algorithms: tuple[str, ...] = ("RS256",)
    apps_claim: str = "apps"
    name_claim: str = "sub"
    leeway_seconds: float = 30.0
    jwks_timeout: float = 5.0
    refresh_seconds: float = 300.0

    def validate(self, path: str) -> None:
        for key in ("issuer", "audience", "apps_claim", "name_claim"):
            if not getattr(self, key):
                raise ConfigError(f"{path}.{key}", "must not be empty")
        parts = urlsplit(self.jwks_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{path}.jwks_url", "must be an absolute http(s) URL")
        if not self.algorithms:
            raise ConfigError(f"{path}.algorithms", "at least one algorithm is required")
        for i, alg in enumerate(self.algorithms):
            if alg not in JWT_ALGORITHMS:
                raise ConfigError(
                    f"{path}.algorithms[{i}]",
                    f"{alg!r} is not a public-key algorithm ({', '.join(JWT_ALGORITHMS)})",
                )
        if self.leeway_seconds < 0:
            raise ConfigError(f"{path}.leeway_seconds", "must not be negative")
        if self.jwks_timeout <= 0:
            raise ConfigError(f"{path}.jwks_timeout", "must be positive")
        if self.refresh_seconds < 60:
            raise ConfigError(f"{path}.refresh_seconds", "must be at least 60")


@dataclass(frozen=True)
class LimitsConfig:
    requests_per_second: float | None = None
    burst: int | None = None
    concurrent_uploads: int | None = None

    def validate(self, path: str) -> None:
        for key in ("requests_per_second", "burst", "concurrent_uploads"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ConfigError(f"{path}.{key}", "must not be negative (0 or null: no limit)")

    @property
    def rate(self) -> tuple[float, int] | None:
        """(requests per second, burst), or None when requests are not limited. The burst
        defaults to one second's worth of requests (at least 1)."""
        if not self.requests_per_second:
            return None
        burst = self.burst or max(1, round(self.requests_per_second))
        return self.requests_per_second, burst
