"""The shipped model collection (``models/`` in the repository): trained models a user can
sample from a fresh clone, each a model folder (:mod:`nudiff.model_folder`) with a card.

A shipped model is ``models/<dataset>-f<fraction>/<kind>/``::

    model.safetensors   EMA weights
    config.yaml         format_version, kind, config, and ``info.card``: what it was trained on
                        (dataset, split, labeled fraction, subset seed and the sha256 of the
                        subset's patch names), its steps and minutes, the machine, its quality
                        numbers and where they come from
    README.md           the card, for people

:func:`ship` writes one from a training run; :func:`shipped` lists the collection;
:func:`check_card` is what the tests hold every shipped model to. From a shell::

    python -m nudiff.models ship runs/sm/v-base models/kumar-f0.10/structure --card card.yaml
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from nudiff.config import differences, load_yaml
from nudiff.data.subsets import subset_filename
from nudiff.diffusion.config import DiffusionConfig
from nudiff.model_folder import (
    DIFFUSION_KINDS,
    FORMAT_VERSION,
    KINDS,
    read_header,
    read_model_folder,
    save_model_folder,
)
from nudiff.segment.config import SegmentConfig
from nudiff.utils import DataError, NudiffError, machine, read_json, write_text

#: the collection, beside the package in a clone (src/nudiff/ -> ../../models)
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
#: what every card states
CARD_KEYS = (
    "dataset",
    "fraction",
    "subset_seed",
    "subset_sha256",
    "steps",
    "minutes",
    "machine",
    "quality",
    "quality_source",
    "command",
)


def subset_sha256(data_dir: str | os.PathLike, fraction: float, seed: int = 0) -> str:
    """The sha256 of a prepared subset's sorted patch names: the same subset, the same hash."""
    path = Path(data_dir) / "subsets" / subset_filename(fraction, seed)
    if not path.is_file():
        raise DataError(path, "no such subset (run `nudiff data prepare` first)")
    names = sorted(read_json(path)["patches"])
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def check_card(card: dict[str, Any], where: str | os.PathLike) -> None:
    """Every key of :data:`CARD_KEYS` is there (one-line :class:`DataError` otherwise)."""
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise DataError(where, f"model card lacks {', '.join(missing)}")


def ship(run_dir: str | os.PathLike, out: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Copy a diffusion run's EMA model (``run_dir/model`` or a model folder) to ``out`` in the
    current folder format, with ``card`` in its ``info`` and as ``README.md``."""
    run_dir = Path(run_dir)
    src = run_dir / "model" if (run_dir / "model").is_dir() else run_dir
    m = read_model_folder(src, DiffusionConfig, DIFFUSION_KINDS)
    steps = m.info.get("step") or m.config.train.steps  # folders before format 1 do not record it
    card = {"kind": m.kind, "steps": steps, "machine": machine()} | card
    check_card(card, out)
    folder = save_model_folder(out, m.weights, m.config, m.kind, m.info | {"card": card})
    write_text(Path(out) / "README.md", card_markdown(card, m.config))
    return folder


def card_markdown(card: dict[str, Any], config: DiffusionConfig) -> str:
    """The card as a short markdown page."""
    model = config.model
    lines = [
        f"# {card['kind']} model: {card['dataset']}, {card['fraction']:.0%} of the labels",
        "",
        f"- Trained on: {card['dataset']} labeled subset {card['fraction']:.2f} (subset seed "
        f"{card['subset_seed']}, sha256 of its patch names `{card['subset_sha256'][:16]}…`)",
        f"- Network: MONAI U-Net, widths {list(model.channels)}, {model.num_res_blocks} res "
        "block(s), "
        f"self-conditioning {model.self_condition}; {config.prediction_type}; windows "
        f"{config.data.patch_size} px at scale {config.data.scale}",
        f"- Budget: {card['steps']} steps, {card['minutes']} min on {card['machine']}",
        f"- Command: `{card['command']}`",
        f"- Quality ({card['quality_source']}):",
        "",
    ]
    lines += [f"  - {k}: {v}" for k, v in card["quality"].items()]
    lines += [
        "",
        "Sample from it: `nudiff synthesize --structure-model <this folder> --image-model ... "
        "--out runs/syn` (see docs/models.md).",
    ]
    return "\n".join(lines) + "\n"


def shipped(root: str | os.PathLike = MODELS_DIR) -> list[Path]:
    """The model folders of the collection (folders holding a ``config.yaml``), sorted."""
    return sorted(p.parent for p in Path(root).glob("*/*/config.yaml"))


def find_shipped(
    kind: str,
    config: DiffusionConfig,
    data_dir: str | os.PathLike,
    fraction: float,
    subset_seed: int = 0,
    root: str | os.PathLike = MODELS_DIR,
) -> Path | None:
    """A shipped ``kind`` model trained with ``config`` on exactly this subset (same patch names),
    or ``None``. Sampler settings and bookkeeping fields (``metadata=BOOKKEEPING``) may differ."""
    try:
        sha = subset_sha256(data_dir, fraction, subset_seed)
    except DataError:
        return None
    for folder in shipped(root):
        if folder.name != kind:
            continue
        m = read_model_folder(folder, DiffusionConfig, (kind,), weights=False)
        card = m.info.get("card", {})
        if card.get("subset_sha256") != sha:
            continue
        diff = [d for d in differences(m.config, config) if not d.startswith("sample.")]
        if not diff:
            return folder
    return None


def upgrade_model_folder(folder: str | os.PathLike) -> Path:
    """Rewrite a model folder of an earlier version in the current format, in place: the same
    weights and config; ``info.json`` moves into ``config.yaml``. A current folder is rewritten
    as it is. From a shell: ``python -m nudiff.models upgrade FOLDER [FOLDER ...]``."""
    folder = Path(folder)
    kind = read_header(folder, "a model").get("kind")
    m = read_model_folder(folder, _config_class(kind), (kind,) if kind in KINDS else KINDS)
    return save_model_folder(folder, m.weights, m.config, m.kind, m.info)


def _config_class(kind: str | None) -> type:
    return SegmentConfig if kind == "segmenter" else DiffusionConfig


def main(argv: list[str] | None = None) -> int:
    """``python -m nudiff.models ship RUN OUT --card CARD.yaml`` (a run's model into the
    collection) or ``python -m nudiff.models upgrade FOLDER ...`` (model folders of an earlier
    format rewritten in place)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        if len(args) == 5 and args[0] == "ship" and args[3] == "--card":
            print(f"{ship(args[1], args[2], load_yaml(args[4]))}: shipped")
        elif len(args) >= 2 and args[0] == "upgrade":
            for folder in args[1:]:
                upgrade_model_folder(folder)
                print(f"{folder}: format_version {FORMAT_VERSION}")
        else:
            print(
                "usage: python -m nudiff.models ship RUN OUT --card CARD.yaml\n"
                "       python -m nudiff.models upgrade FOLDER [FOLDER ...]",
                file=sys.stderr,
            )
            return 2
    except NudiffError as e:
        print(f"nudiff: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
