"""A cell's fingerprint: the hash of everything that decides its numbers.

A committed cell carries the fingerprint of the configuration that computed it; a run takes it
only under the same fingerprint. So the hash must not move for an unchanged configuration, and
what it leaves out is declared where each option is defined (dataclass field metadata,
:mod:`nudiff.config`): a field that changes speed only (``SPEED_ONLY``) is never in it, a field
added after cells were committed (``ADDED_LATER``) is left out while it has its default. Real-label
cells committed before their hash left the unused ``structure`` section out still match
(``legacy``), and sections whose fields moved since (``segment.post``, the samplers of
``synthesis``) are hashed as they were written then. tests/test_experiment_store.py checks every
committed cell against its config.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any

from nudiff.config import to_dict
from nudiff.experiment.grid import Cell, Plan
from nudiff.structure import DecodeParams
from nudiff.synthesis import FLAT_SAMPLE_KEYS, REAL_STRUCTURES

# speed-only fields that were hashed before speed-only fields were declared where they are
# defined (the diffusion sections' sample.batch_size): kept in, or committed cells would move.
# Frozen: a field declared speed-only from now on is simply left out.
HASHED_BEFORE = ("sample.batch_size",)


def hashed(config: Any, keep: tuple[str, ...] = (), prefix: str = "") -> dict:
    """``to_dict(config)`` as a fingerprint hashes it: speed-only fields left out (but the
    dotted names in ``keep``), fields added later left out while they have their default."""
    out = {}
    for f in dataclasses.fields(config):
        value, name = getattr(config, f.name), prefix + f.name
        if f.metadata.get("speed_only") and name not in keep:
            continue
        if f.metadata.get("added_later") and value == _default(f):
            continue
        out[f.name] = hashed(value, keep, name + ".") if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return out


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def cell_fingerprint(plan: Plan, cell: Cell, legacy: bool = False) -> str:
    """Hash of everything that decides a cell's numbers: the data and segmenter sections, the
    subset draw and, for arms that use them, the diffusion and synthesis sections (the
    ``structure`` section only when a structure model draws the labels) or the copy-paste
    settings.

    An option added later must be left out of the hash while it has its default value
    (``ADDED_LATER`` where it is defined, and ``filter_seed``), or every committed cell is refused.
    ``legacy``: the hash as it was before real-label cells left the unused ``structure``
    section out (:func:`cell_fingerprints` accepts both)."""
    parts = {"data": hashed(plan.data), "segment": _segment_as_hashed(plan), "cell": cell.name,
             "subset_seed": plan.experiment.subset_seed}
    for key in ("fractions", "seed"):
        parts["data"].pop(key, None)  # set per run from the grid; the cell name holds them
    parts["segment"]["train"].pop("seed", None)
    if cell.needs.pairs:
        parts |= {k: hashed(getattr(plan, k), keep=HASHED_BEFORE) for k in ("structure", "image")}
        parts["synthesis"] = _synthesis_as_hashed(plan)
        if plan.synthesis.structures in REAL_STRUCTURES and not legacy:
            parts.pop("structure")  # no structure model: its section decides nothing
        parts["n_synthetic"] = plan.experiment.n_synthetic
        if plan.experiment.filter_seed:  # 0 left out: fingerprints from before the option hold
            parts["filter_seed"] = plan.experiment.filter_seed
    if cell.needs.copypaste:
        parts["n_synthetic"] = plan.experiment.n_synthetic
        parts["copypaste"] = hashed(plan.experiment.copypaste)
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_fingerprints(plan: Plan, cell: Cell) -> tuple[str, ...]:
    """The fingerprints a committed cell of ``plan`` may carry: the current one first, then
    the legacy one of real-label cells committed before their hash left ``structure`` out."""
    current, legacy = cell_fingerprint(plan, cell), cell_fingerprint(plan, cell, legacy=True)
    return (current,) if legacy == current else (current, legacy)


def _segment_as_hashed(plan: Plan) -> dict:
    """The segment section as it was hashed when ``post`` held optional copies of the
    ``DecodeParams`` fields: a value equal to ``DecodeParams``' default as ``None``."""
    segment = hashed(plan.segment)
    default = to_dict(DecodeParams())
    segment["post"] = {k: None if v == default[k] else v for k, v in segment["post"].items()}
    return segment


def _synthesis_as_hashed(plan: Plan) -> dict:
    """The synthesis section as it was hashed when it repeated the samplers' fields:
    ``structure_sampler``, ``structure_steps``, ``image_sampler``, ``image_steps`` and
    ``guidance_scale`` of the sampling each model gets (its own ``sample`` section where
    synthesis leaves it to the model); ``<model>_clip_x0`` only where synthesis overrides the
    model's own clipping (which the model's section, hashed too, holds)."""
    synthesis = hashed(plan.synthesis)
    flat = {}
    for model, keys in FLAT_SAMPLE_KEYS.items():
        own = getattr(plan, model).sample
        sample = synthesis.pop(f"{model}_sample") or to_dict(own)
        flat |= {key: sample[field] for key, field in keys.items()}
        if sample["clip_x0"] != own.clip_x0:
            flat[f"{model}_clip_x0"] = sample["clip_x0"]
    return flat | synthesis
