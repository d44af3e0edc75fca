"""Re-stamp committed cells with the current fingerprint rule, after proving their old stamp.

Each results folder (``cells/`` beside the ``config.yaml`` its cells ran) is read; for each
committed cell, the fingerprint it carries is recomputed from that ``config.yaml`` with the rule
of the version it was stamped under (kept here, not in the package). Only a cell whose old
fingerprint is proven that way gets the current one (``nudiff.experiment.fingerprint``); any
failure stops before anything is written. The proof (folder, cell, old and new fingerprint) is
written to ``benchmarks/results/fingerprints/restamp.json`` and ``.md``. A ``config.yaml``
still in deprecated keys is rewritten in today's (checked: same fingerprints).

    python scripts/restamp_fingerprints.py            # every folder under benchmarks/results
    python scripts/restamp_fingerprints.py --check    # prove only, write nothing
    python scripts/restamp_fingerprints.py benchmarks/results/kumar-grid
    python scripts/restamp_fingerprints.py --exclude demo-kumar   # a grid still running

A re-stamped cell keeps its old stamp (``restamped_from``), so the proof can be rerun at any time.

When the rule changes again (a new ``FINGERPRINT_VERSION``): copy the rule being replaced here as
``fingerprint_v<N>`` and add it to :data:`RULES` before changing the package.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from nudiff.config import save_config, to_dict
from nudiff.experiment.fingerprint import (
    FINGERPRINT_VERSION,
    cell_fingerprint,
    field_default,
    stamp,
)
from nudiff.experiment.grid import Cell, Plan, load_plan
from nudiff.experiment.store import committed_plan
from nudiff.structure import DecodeParams
from nudiff.synthesis import FLAT_SAMPLE_KEYS, REAL_STRUCTURES
from nudiff.utils import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROOF = RESULTS / "fingerprints" / "restamp"

# --- version 1 (until 2026-12): speed-only fields left out, but ``sample.batch_size`` (hashed
# before speed-only fields were declared); options added after cells were committed left out
# while at their default (the fields tagged ``ADDED_LATER`` then, by today's class and field
# names); ``segment.post`` and synthesis's samplers hashed as they were once written;
# real-label cells committed before their hash left the unused ``structure`` section out carry
# the "legacy" hash.
V1_HASHED_BEFORE = ("sample.batch_size",)
V1_ADDED_LATER = {
    ("DenoiserConfig", "self_condition"),
    ("DiffusionTrainConfig", "min_snr_gamma"),
    ("DiffusionTrainConfig", "max_minutes"),
    ("DiffusionTrainConfig", "init_from"),
    ("DiffusionConfig", "prediction_type"),
    ("DiffusionConfig", "zero_terminal_snr"),
    ("DecodeParams", "semantic_sigma"),
    ("SynthesisConfig", "structures"),
    ("SynthesisConfig", "pasted_nuclei"),
    ("FilterConfig", "max_unlabeled_rate"),
}


def _v1_hashed(config: Any, keep: tuple[str, ...] = (), prefix: str = "") -> dict:
    out = {}
    for f in dataclasses.fields(config):
        value, name = getattr(config, f.name), prefix + f.name
        if f.metadata.get("speed_only") and name not in keep:
            continue
        if (type(config).__name__, f.name) in V1_ADDED_LATER and value == field_default(f):
            continue
        out[f.name] = (
            _v1_hashed(value, keep, name + ".")
            if dataclasses.is_dataclass(value)
            else copy.deepcopy(value)
        )
    return out


def _v1_segment(plan: Plan) -> dict:
    segment = _v1_hashed(plan.segment)
    default = to_dict(DecodeParams())
    segment["post"] = {k: None if v == default[k] else v for k, v in segment["post"].items()}
    return segment


def _v1_synthesis(plan: Plan) -> dict:
    synthesis = _v1_hashed(plan.synthesis)
    flat = {}
    for model, keys in FLAT_SAMPLE_KEYS.items():
        own = getattr(plan, model).sample
        sample = synthesis.pop(f"{model}_sample") or to_dict(own)
        flat |= {key: sample[field] for key, field in keys.items()}
        if sample["clip_x0"] != own.clip_x0:
            flat[f"{model}_clip_x0"] = sample["clip_x0"]
    return flat | synthesis


def fingerprint_v1(plan: Plan, cell: Cell, legacy: bool = False) -> str:
    parts = {
        "data": _v1_hashed(plan.data),
        "segment": _v1_segment(plan),
        "cell": cell.name,
        "subset_seed": plan.experiment.subset_seed,
    }
    for key in ("fractions", "seed"):
        parts["data"].pop(key, None)
    parts["segment"]["train"].pop("seed", None)
    if cell.needs.pairs:
        parts |= {
            k: _v1_hashed(getattr(plan, k), keep=V1_HASHED_BEFORE) for k in ("structure", "image")
        }
        parts["synthesis"] = _v1_synthesis(plan)
        if plan.synthesis.structures in REAL_STRUCTURES and not legacy:
            parts.pop("structure")
        parts["n_synthetic"] = plan.experiment.n_synthetic
        if plan.experiment.filter_seed:
            parts["filter_seed"] = plan.experiment.filter_seed
    if cell.needs.copypaste:
        parts["n_synthetic"] = plan.experiment.n_synthetic
        parts["copypaste"] = _v1_hashed(plan.experiment.copypaste)
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _v1_accepts(plan: Plan, cell: Cell) -> tuple[str, ...]:
    return fingerprint_v1(plan, cell), fingerprint_v1(plan, cell, legacy=True)


# version -> the fingerprints a cell stamped under it may carry
RULES = {1: _v1_accepts}


def prove(folder: Path) -> list[dict]:
    """One row per committed cell of ``folder``: its old stamp proven (for a cell re-stamped
    already, the stamp it kept as ``restamped_from``), its new one; an error (SystemExit) naming
    the first cell whose old stamp its folder's config does not give."""
    plan = committed_plan(folder)
    rows = []
    for path in sorted((folder / "cells").glob("*.json")):
        record = read_json(path)
        cell = Cell(record["fraction"], record["arm"], record["seed"])
        new = stamp(plan, cell)
        old = record.get("restamped_from") or {
            "version": record.get("fingerprint_version", 1),
            "fingerprint": record["fingerprint"],
        }
        if old["version"] not in RULES or old["fingerprint"] not in RULES[old["version"]](
            plan, cell
        ):
            raise SystemExit(
                f"{path}: its fingerprint {old['fingerprint']} (version "
                f"{old['version']}) is not what {folder}/config.yaml gives"
            )
        current = record.get("fingerprint_version", 1) == FINGERPRINT_VERSION
        if current and record["fingerprint"] != new["fingerprint"]:
            raise SystemExit(
                f"{path}: stamped version {FINGERPRINT_VERSION}, not by its config.yaml"
            )
        rows.append(
            {
                "folder": str(folder.relative_to(ROOT)),
                "cell": cell.name,
                "old": old["fingerprint"],
                "old_version": old["version"],
                **new,
            }
        )
    return rows


def upgrade_config(folder: Path) -> bool:
    """Rewrite ``folder/config.yaml`` in today's keys when it uses deprecated ones (synthesis's
    flat sampler keys), after checking that the rewritten file gives every cell the same
    fingerprint; returns whether it was rewritten."""
    path = folder / "config.yaml"
    raw = yaml.safe_load(path.read_text()).get("synthesis") or {}
    flat = {k for keys in FLAT_SAMPLE_KEYS.values() for k in keys}
    if not flat & set(raw):
        return False
    plan = committed_plan(folder)
    with tempfile.TemporaryDirectory() as tmp:
        save_config(plan, Path(tmp) / "config.yaml")
        again = load_plan(Path(tmp) / "config.yaml")
        cells = [
            Cell(r["fraction"], r["arm"], r["seed"])
            for r in map(read_json, sorted((folder / "cells").glob("*.json")))
        ]
        if any(cell_fingerprint(again, c) != cell_fingerprint(plan, c) for c in cells):
            raise SystemExit(f"{path}: rewritten in today's keys it gives other fingerprints")
        header = "".join(
            line for line in path.read_text().splitlines(keepends=True) if line.startswith("#")
        )  # its provenance note, kept
        write_text(path, header + (Path(tmp) / "config.yaml").read_text())
    return True


def restamp(folder: Path, rows: list[dict]) -> int:
    """Write the new stamps of ``folder``'s proven ``rows``; returns how many cells changed."""
    changed = 0
    by_cell = {r["cell"]: r for r in rows}
    for path in sorted((folder / "cells").glob("*.json")):
        record = read_json(path)
        row = by_cell[path.stem]
        if record.get("fingerprint_version", 1) == FINGERPRINT_VERSION:
            continue
        record |= {
            "fingerprint": row["fingerprint"],
            "fingerprint_version": FINGERPRINT_VERSION,
            "restamped_from": {"version": row["old_version"], "fingerprint": row["old"]},
        }
        write_json(path, record)
        changed += 1
    return changed


def proof_markdown(rows: list[dict]) -> str:
    lines = [
        f"# Committed cells re-stamped to fingerprint version {FINGERPRINT_VERSION}",
        "",
        "Each cell's old fingerprint was recomputed from its folder's `config.yaml` with the "
        "rule of its version (scripts/restamp_fingerprints.py) before the new one was "
        f"written. {len(rows)} cells in {len({r['folder'] for r in rows})} folders.",
        "",
        "| folder | cell | old (version) | new |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['folder']} | {r['cell']} | {r['old']} (v{r['old_version']}) | {r['fingerprint']} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="*", type=Path, help="results folders (default: all)")
    p.add_argument("--check", action="store_true", help="prove only, write nothing")
    p.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        help="folder names to leave as they are (a grid still committing cells)",
    )
    args = p.parse_args(argv)
    folders = [f.resolve() for f in args.folders] or sorted(
        c.parent
        for c in RESULTS.glob("**/cells")
        if (c.parent / "config.yaml").exists() and c.parent.name not in args.exclude
    )
    proofs = {folder: prove(folder) for folder in folders}  # every proof before any write
    rows = [r for folder_rows in proofs.values() for r in folder_rows]
    print(f"{len(rows)} committed cells in {len(folders)} folders: old fingerprints proven")
    if args.check:
        return 0
    changed = sum(restamp(folder, folder_rows) for folder, folder_rows in proofs.items())
    upgraded = [f for f in folders if upgrade_config(f)]
    print(f"{len(upgraded)} config.yaml rewritten in today's keys (same fingerprints)")
    if not args.folders:
        write_json(PROOF.with_suffix(".json"), {"version": FINGERPRINT_VERSION, "cells": rows})
        write_text(PROOF.with_suffix(".md"), proof_markdown(rows))
    print(f"{changed} re-stamped to version {FINGERPRINT_VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
