"""Typed construction of the configuration: YAML values checked against the dataclasses' type
hints, each problem a ``ConfigError`` naming its key path (used by ``gateway.config``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from gateway.config_errors import ConfigError, join_path
from gateway.envsubst import Substituted


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _convert(inner, value, path)
    if origin is Literal:
        # YAML 1.1 reads an unquoted `off` (or `on`) as a boolean: the word written is meant.
        if isinstance(value, bool) and ("on" if value else "off") in get_args(tp):
            value = "on" if value else "off"
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(path, f"must be one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list, got {_type_name(value)}")
        inner = get_args(tp)[0]
        return tuple(_convert(inner, v, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return build(typing.cast(type, tp), value, path)
    if isinstance(value, Substituted) and tp in (int, float, bool):
        value = yaml.safe_load(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, str):
        return str(value)
    if type(value) is not tp:
        raise ConfigError(path, f"must be {tp.__name__}, got {_type_name(value)}")
    return value


def _type_name(value: Any) -> str:
    return {type(None): "null", dict: "mapping", list: "list"}.get(
        type(value), type(value).__name__
    )


def build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be a mapping, got {_type_name(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(join_path(path, str(key)), "unknown key")
    kwargs = {}
    for name, f in fields.items():
        key_path = join_path(path, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key_path)
        elif dataclasses.is_dataclass(hints[name]):
            # An absent section is built from {}: its required keys and checks still apply.
            kwargs[name] = _convert(hints[name], {}, key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(key_path, "required")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj
