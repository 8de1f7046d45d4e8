"""``ConfigError``, shared by the configuration's sections and its typed construction."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration is unusable; the message starts with the key path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
