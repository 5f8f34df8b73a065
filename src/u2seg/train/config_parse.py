"""Plain dicts (as read from YAML) into typed dataclasses and back: the machinery under :mod:`.config`.

:func:`dataclass_from_dict` checks each key against the dataclass's fields (an unknown key gets a
"did you mean": a name from the caller's alias table, else the closest field name) and converts
each value to the field's type hint (bool, int, float, str, dict, lists, tuples, unions with None,
nested dataclasses). :func:`apply_overrides` edits the dict first with ``a.b.c=value`` items
(``--set``). Every error is a :class:`ConfigError` that names the file and the key.

Nothing here knows the training schema: the dataclasses and the checks of their values are
:mod:`.config`'s, which also re-exports these names.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union

import yaml

from ..errors import U2SegError

__all__ = ["ConfigError", "apply_overrides", "config_to_dict", "dataclass_from_dict"]


class ConfigError(U2SegError):
    """A training configuration is invalid; the message names the file and the key."""


def apply_overrides(raw: dict, overrides: Sequence[str], *, source: str = "config") -> dict:
    """A copy of ``raw`` with each ``a.b.c=value`` applied (value parsed as YAML; ``a.b=`` → null)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=1e-4")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        node = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"--set {item!r}: {where} is a {_kind(child)}, not a section with keys")
            node = child
        node[parts[-1]] = value
    return raw


def dataclass_from_dict(cls: type, raw: dict, *, source: str = "config",
                        aliases: Mapping[str, str] | None = None) -> Any:
    """``cls(**raw)``, nested dataclasses included, with every key and value checked.

    ``aliases``: other programs' names for keys (lower case) → ours, for "did you mean"."""
    return _build(cls, raw, "", source, aliases or {})


def config_to_dict(config: Any) -> dict:
    """A plain, YAML/JSON-friendly dict (tuples as lists) of a config dataclass."""
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(config)


# --------------------------------------------------------------------------------------------
# structural validation


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping"}.get(type(value), type(value).__name__)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple:
            return f"a list of {len(args)} {_describe(args[0])}s"
        return f"a list of {_describe(args[0])}s"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(tp, str(tp))


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp: Any, key: str, source: str, aliases: Mapping[str, str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        # dataclasses first (their errors are the informative ones), then plain types
        for arg in sorted((a for a in args if a is not type(None)), key=lambda a: not dataclasses.is_dataclass(a)):
            try:
                return _convert(value, arg, key, source, aliases)
            except _Mismatch:
                continue
        raise _Mismatch
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return _build(tp, value, key, source, aliases)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise _Mismatch
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_convert(v, item, f"{key}[{i}]", source, aliases) for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a, f"{key}[{i}]", source, aliases) for i, (v, a) in enumerate(zip(value, args)))
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module


def _build(cls: type, raw: dict, prefix: str, source: str, aliases: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    section = prefix or "the top level"
    for key in raw:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            alias = aliases.get(str(key).lower())
            close = [alias] if alias in fields else difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: {where}: unknown key in {section}{hint} "
                              f"(known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: {key}: required key is missing")
            continue
        value = raw[name]
        tp = hints[name]
        try:
            values[name] = _convert(value, tp, key, source, aliases)
        except _Mismatch:
            if value is None and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: {key}: required key is empty") from None
            raise ConfigError(f"{source}: {key}: expected {_describe(tp)}, got {_kind(value)} {value!r}") from None
    return cls(**values)
