"""A cell's fingerprint: the hash of everything that decides its numbers.

A committed cell carries the fingerprint of the configuration that computed it; a run takes it
only under the same fingerprint. So the hash must not move for an unchanged configuration:
options added after cells were committed are left out while they have their defaults
(``LATER_OPTIONS``), options that change speed only are never in it (``SPEED_OPTIONS``), and
real-label cells committed before their hash left the unused ``structure`` section out still
match (``legacy``). tests/experiment/test_store.py checks every committed cell against its config.
"""

from __future__ import annotations

import hashlib
import json

from nudiff.config import to_dict
from nudiff.experiment.grid import Cell, Plan
from nudiff.structure import DecodeParams
from nudiff.synthesis import FLAT_SAMPLE_KEYS, REAL_STRUCTURES

# options added after cells were committed: left out of a cell's fingerprint at these defaults
# (dotted keys reach into subsections)
LATER_OPTIONS = {
    "synthesis": {"structures": "sampled", "pasted_nuclei": 3},
    **{model: {"prediction_type": "epsilon", "zero_terminal_snr": False, "train.max_minutes": None,
               "model.self_condition": False, "train.min_snr_gamma": None} for model in ("structure", "image")},
}
# options that change how fast, not what (beyond float rounding): never in a fingerprint
SPEED_OPTIONS = ("train.num_workers", "train.compile", "model.flash_attention")


def _pop_dotted(section: dict, key: str, when=lambda value: True) -> None:
    *path, last = key.split(".")
    for part in path:
        section = section.get(part, {})
    if last in section and when(section[last]):
        section.pop(last)


def cell_fingerprint(plan: Plan, cell: Cell, legacy: bool = False) -> str:
    """Hash of everything that decides a cell's numbers: the data and segmenter sections, the
    subset draw and, for arms that use them, the diffusion and synthesis sections (the
    ``structure`` section only when a structure model draws the labels) or the copy-paste
    settings.

    An option added later must be left out of the hash while it has its default value
    (``LATER_OPTIONS``, and ``filter_seed``), or every committed cell is refused.
    ``legacy``: the hash as it was before real-label cells left the unused ``structure``
    section out (:func:`cell_fingerprints` accepts both)."""
    parts = {"data": to_dict(plan.data), "segment": _segment_as_hashed(plan), "cell": cell.name,
             "subset_seed": plan.experiment.subset_seed}
    for key in ("fractions", "seed"):
        parts["data"].pop(key, None)  # set per run from the grid; the cell name holds them
    parts["segment"]["train"].pop("seed", None)
    if cell.needs.pairs:
        parts |= {k: to_dict(getattr(plan, k)) for k in ("structure", "image")}
        parts["synthesis"] = _synthesis_as_hashed(plan)
        for section, defaults in LATER_OPTIONS.items():  # at their defaults: fingerprints from before hold
            for key, default in defaults.items():
                _pop_dotted(parts[section], key, lambda value, d=default: value == d)
        for section in ("structure", "image"):
            for key in SPEED_OPTIONS:
                _pop_dotted(parts[section], key)
        if plan.synthesis.structures in REAL_STRUCTURES and not legacy:
            parts.pop("structure")  # no structure model: its section decides nothing
        parts["n_synthetic"] = plan.experiment.n_synthetic
        if plan.experiment.filter_seed:  # 0 left out: fingerprints from before the option hold
            parts["filter_seed"] = plan.experiment.filter_seed
    if cell.needs.copypaste:
        parts["n_synthetic"] = plan.experiment.n_synthetic
        parts["copypaste"] = to_dict(plan.experiment.copypaste)
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
    segment = to_dict(plan.segment)
    default = to_dict(DecodeParams())
    segment["post"] = {k: None if v == default[k] else v for k, v in segment["post"].items()}
    return segment


def _synthesis_as_hashed(plan: Plan) -> dict:
    """The synthesis section as it was hashed when it repeated the samplers' fields:
    ``structure_sampler``, ``structure_steps``, ``image_sampler``, ``image_steps`` and
    ``guidance_scale`` of the sampling each model gets (its own ``sample`` section where
    synthesis leaves it to the model); ``<model>_clip_x0`` only where synthesis overrides the
    model's own clipping (which the model's section, hashed too, holds)."""
    synthesis = to_dict(plan.synthesis)
    flat = {}
    for model, keys in FLAT_SAMPLE_KEYS.items():
        own = getattr(plan, model).sample
        sample = synthesis.pop(f"{model}_sample") or to_dict(own)
        flat |= {key: sample[field] for key, field in keys.items()}
        if sample["clip_x0"] != own.clip_x0:
            flat[f"{model}_clip_x0"] = sample["clip_x0"]
    return flat | synthesis
