"""Typed configuration: dataclasses loaded from YAML, saved beside every run.

Each stage defines its own dataclass next to its code (``SubsetConfig`` in
``nudiff.data.subsets``, ``DiffusionConfig`` in ``nudiff.diffusion.config``, ...).
This module turns YAML mappings into those dataclasses, strictly: an unknown key is an
error that names the file and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nudiff.utils import DataError, NudiffError, write_text

T = TypeVar("T")

# Field metadata, declared where an option is defined (``field(default=..., metadata=...)``):
# SPEED_ONLY: the option changes how fast a result comes, not the result (beyond float rounding);
# BOOKKEEPING: how often a run writes logs, checkpoints or previews: not the result either.
# Neither enters :func:`differences` (the "same configuration?" rule) nor a cell's fingerprint.
# Every compatibility path (keys, files and columns written by earlier versions, read with a
# warning or mapped silently) is removed in this release; each names it where it is defined.
REMOVED_IN = "0.2"
SPEED_ONLY = {"speed_only": True}
BOOKKEEPING = {"bookkeeping": True}


def decides_result(f: dataclasses.Field) -> bool:
    """Whether a config field decides a result (neither speed-only nor bookkeeping)."""
    return not (f.metadata.get("speed_only") or f.metadata.get("bookkeeping"))


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys raise ``DataError``, and so
    does a value the class refuses (a ``ValueError`` of its checks).

    A class whose keys changed may define ``upgrade_keys(data, where) -> data`` (a classmethod
    or staticmethod): it maps keys written by earlier versions onto the current ones first."""
    data = dict(data or {})
    if hasattr(cls, "upgrade_keys"):
        data = cls.upgrade_keys(data, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise DataError(
            where, f"unknown key(s) {unknown} for {cls.__name__}; known: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}:{name}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise DataError(where, str(e)) from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        (arg, *_) = typing.get_args(tp) or (Any,)
        seq = [_coerce(arg, v, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def differences(made: Any, wanted: Any, prefix: str = "") -> list[str]:
    """The dotted names of the fields in which two configurations (dataclasses of one class)
    differ, field by field through nested dataclasses, leaving out the fields declared
    speed-only or bookkeeping where they are defined (:func:`decides_result`): the one "same
    configuration?" rule. ``[]``: the same configuration."""
    if type(made) is not type(wanted) or not dataclasses.is_dataclass(made):
        return [] if made == wanted else [prefix.rstrip(".") or "(the whole configuration)"]
    out = []
    for f in dataclasses.fields(made):
        if not decides_result(f):
            continue
        a, b = getattr(made, f.name), getattr(wanted, f.name)
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
            out += differences(a, b, f"{prefix}{f.name}.")
        elif plain_value(a) != plain_value(b):
            out.append(prefix + f.name)
    return out


def plain_value(value: Any) -> Any:
    """Tuples as lists, nested dataclasses as dicts: what a config looks like once written."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    return value


@functools.cache
def warn_deprecated(what: str) -> None:
    """A one-line deprecation warning on stderr, once per process and message."""
    print(f"nudiff: warning: {what}", file=sys.stderr)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "config file not found") from None
    except yaml.YAMLError as e:
        raise DataError(path, f"not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(path, "config must be a YAML mapping")
    return data


def load_config(
    cls: type[T],
    path: str | os.PathLike | None,
    section: str | None = None,
    overrides: list[str] | None = None,
) -> T:
    """Load ``cls`` from a YAML file (optionally one top-level ``section`` of it; ``None``: the
    defaults), with ``overrides`` (``["train.steps=500", ...]``, keys within that section) set."""
    data = {} if path is None else load_yaml(path)
    if section is not None:
        data = data.get(section, {}) or {}
    data = apply_overrides(data, overrides or [])
    return from_dict(
        cls, data, where=(str(path) if path else "defaults") + (f"[{section}]" if section else "")
    )


def apply_overrides(raw: dict, overrides: list[str], where: str = "--set") -> dict:
    """``["segment.train.real_ratio=0.9", ...]`` -> ``raw`` with those keys set (values parsed
    as YAML: numbers, null, lists); the config classes then check names and types."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NudiffError(f"{where} {item!r}: expected SECTION.KEY=VALUE")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise NudiffError(f"{where} {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(value)
    return raw


def save_config(obj: Any, path: str | os.PathLike) -> None:
    write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
