"""The one error of configuration loading, apart so that every section's module can raise it."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration is unusable; the message starts with the key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
