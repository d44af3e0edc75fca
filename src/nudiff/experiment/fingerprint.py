"""A cell's fingerprint: the hash of everything that decides its numbers.

A committed cell carries the fingerprint of the configuration that computed it, and the version
of this rule (``fingerprint_version``); a run takes it only under the same fingerprint.

The rule (version :data:`FINGERPRINT_VERSION`): a section is hashed as the fields that decide a
result (:func:`nudiff.config.decides_result`: not speed-only, not bookkeeping, declared where each
field is defined) **whose value differs from the field's default**. So a new option whose
default keeps the old behaviour moves no fingerprint, and needs no tag; changing a default that
decides results is caught by ``tests/test_fingerprint.py`` (the defaults are pinned in
``tests/fingerprint_defaults.json``): bump the version and re-stamp the committed cells with
``scripts/restamp_fingerprints.py``, which proves each cell's old fingerprint before it writes
the new one (that script, not this module, keeps the earlier rules).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from nudiff.config import decides_result, plain_value
from nudiff.data.copypaste import CopyPasteConfig
from nudiff.experiment.grid import SECTIONS, Cell, Plan
from nudiff.synthesis import REAL_STRUCTURES
from nudiff.utils import NudiffError

FINGERPRINT_VERSION = 2

# sections whose fields are set per run from the grid (the cell's name holds them)
_PER_RUN = {"data": ("fractions", "seed"), "segment": ("train.seed",)}


def decisive(config: Any, prefix: str = "") -> dict:
    """The fields of dataclass ``config`` that decide a result and differ from their default,
    as a nested dict (nested dataclasses as nested dicts; one left at all defaults is absent)."""
    out = {}
    for f in dataclasses.fields(config):
        if not decides_result(f):
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            if nested := decisive(value, prefix + f.name + "."):
                out[f.name] = nested
        elif plain_value(value) != plain_value(field_default(f)):
            out[f.name] = plain_value(value)
    return out


def decisive_defaults(config_class: type, prefix: str = "") -> dict[str, Any]:
    """Dotted name -> default of every field of ``config_class`` that decides a result (what
    ``tests/fingerprint_defaults.json`` pins: a changed default moves no fingerprint)."""
    out = {}
    for f in dataclasses.fields(config_class):
        if not decides_result(f):
            continue
        default = field_default(f)
        if dataclasses.is_dataclass(default):
            out |= decisive_defaults(type(default), prefix + f.name + ".")
        else:
            out[prefix + f.name] = plain_value(default)
    return out


def all_decisive_defaults() -> dict[str, dict[str, Any]]:
    """:func:`decisive_defaults` of every config class a fingerprint hashes by its defaults, by
    class name (the experiment section's hashed values are hashed as they are)."""
    classes = [cls for name, cls in SECTIONS.items() if name != "experiment"]
    return {cls.__name__: decisive_defaults(cls) for cls in [*classes, CopyPasteConfig]}


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value (its factory called)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _section(plan: Plan, name: str) -> dict:
    parts = decisive(getattr(plan, name))
    for dotted in _PER_RUN.get(name, ()):
        *path, key = dotted.split(".")
        node = parts
        for p in path:
            node = node.get(p, {})
        node.pop(key, None)
    return parts


def cell_parts(plan: Plan, cell: Cell) -> dict:
    """What a cell's fingerprint hashes: the rule's version, the cell, the data and segmenter
    sections, the subset draw and, for arms that use them, the image model, synthesis and pair
    count (the structure model only when one draws the labels) or the copy-paste settings."""
    parts = {
        "version": FINGERPRINT_VERSION,
        "cell": cell.name,
        "data": _section(plan, "data"),
        "segment": _section(plan, "segment"),
        "subset_seed": plan.experiment.subset_seed,
    }
    if cell.needs.pairs:
        parts |= {
            "image": _section(plan, "image"),
            "synthesis": _section(plan, "synthesis"),
            "n_synthetic": plan.experiment.n_synthetic,
            "filter_seed": plan.experiment.filter_seed,
        }
        if plan.synthesis.structures not in REAL_STRUCTURES:
            parts["structure"] = _section(plan, "structure")
    if cell.needs.copypaste:
        parts["n_synthetic"] = plan.experiment.n_synthetic
        parts["copypaste"] = decisive(plan.experiment.copypaste)
    return parts


def cell_fingerprint(plan: Plan, cell: Cell) -> str:
    """16 hex digits: the SHA-256 of :func:`cell_parts`."""
    text = json.dumps(cell_parts(plan, cell), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(plan: Plan, cell: Cell) -> dict:
    """The keys a committed cell's record carries: its fingerprint and the rule's version."""
    return {
        "fingerprint": cell_fingerprint(plan, cell),
        "fingerprint_version": FINGERPRINT_VERSION,
    }


def matches(record: dict, plan: Plan, cell: Cell) -> bool:
    """Whether a committed cell's ``record`` was computed with ``plan``'s configuration; a
    record stamped under another version of the rule is an error saying how to re-stamp it."""
    version = record.get("fingerprint_version", 1)
    if version != FINGERPRINT_VERSION:
        raise NudiffError(
            f"cell {cell.name}: committed under fingerprint version {version}, this nudiff "
            f"computes version {FINGERPRINT_VERSION}: run `python "
            "scripts/restamp_fingerprints.py` "
            "(it proves each cell's old fingerprint before writing the new one)"
        )
    return record.get("fingerprint") == cell_fingerprint(plan, cell)
