"""The ``sources.resumable`` section: resumable uploads (tus 1.0, the IETF draft).

Each key's default and meaning is documented once, in ``config.example.yaml``."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config_errors import ConfigError

# IETF draft-ietf-httpbis-resumable-upload interop versions the gateway can speak.
KNOWN_INTEROP_VERSIONS = (3, 5, 6, 7, 8, 9)
# tus Upload-Checksum algorithms the gateway can check.
KNOWN_CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")


@dataclass(frozen=True)
class ResumableConfig:
    enabled: bool = True
    ttl_seconds: int = 86400
    interop_versions: tuple[int, ...] = (5, 6, 7, 8, 9)
    send_104: bool = False
    max_open_per_source: int = 4
    checksum_algorithms: tuple[str, ...] = KNOWN_CHECKSUM_ALGORITHMS
    # Key prefix of the upload state, tail and staging objects, in storage.bucket.
    prefix: str = "uploads/"

    def validate(self, path: str) -> None:
        if self.ttl_seconds <= 0:
            raise ConfigError(f"{path}.ttl_seconds", "must be positive")
        if self.max_open_per_source < 1:
            raise ConfigError(f"{path}.max_open_per_source", "must be at least 1")
        for i, version in enumerate(self.interop_versions):
            if version not in KNOWN_INTEROP_VERSIONS:
                known = ", ".join(map(str, KNOWN_INTEROP_VERSIONS))
                raise ConfigError(f"{path}.interop_versions[{i}]", f"must be one of {known}")
        for i, name in enumerate(self.checksum_algorithms):
            if name not in KNOWN_CHECKSUM_ALGORITHMS:
                known = ", ".join(KNOWN_CHECKSUM_ALGORITHMS)
                raise ConfigError(f"{path}.checksum_algorithms[{i}]", f"must be one of {known}")
        if not self.prefix or not self.prefix.endswith("/"):
            raise ConfigError(f"{path}.prefix", "must be a non-empty key prefix ending with '/'")
