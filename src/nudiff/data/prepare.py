"""One-command data preparation: paired folders -> validation images, patch pool, subsets.

Layout written under ``out``::

    val/images/<name>.png, val/labels/<name>.png    whole held-out images (test-folder layout)
    patches/images/*.png, patches/labels/*.png      pool patches (16-bit ids 1..N)
    patches/manifest.json                           per patch: source, origin, nucleus ids
    subsets/frac{f:.2f}_seed{seed}.json             labeled subsets (patch names + stats)
    manifest.json                                   sources, val/pool names, params, subsets

Validation images come whole from one folder (default the first: MoNuSeg ``train/``, whose labels
are exact); every other image goes to the pool. With ``split`` (a JSON file such as
``kumar_split.json``: a ``train`` list and one or more ``test*`` lists of image names) the held-out
images are exactly the ``test*`` images, the pool exactly the ``train`` images, and the manifest
records each held-out image's group (e.g. ``test_same_organ``) for the report. The validation
choice uses ``val_seed``, not ``seed``, so subsets of several seeds share one validation set and
pool. Rerunning rewrites every file atomically with the same content; subsets written earlier for
other seeds/fractions are kept while the pool is unchanged, and removed when it changes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudiff.config import to_dict
from nudiff.data.dataset import Sample, load_folder, load_folders
from nudiff.data.io import read_image, read_instance_map, write_image, write_instance_map
from nudiff.data.patches import PATCH_MANIFEST, cut_patches, remove_stale
from nudiff.data.subsets import SubsetConfig, subset_filename, write_subsets
from nudiff.utils import DataError, atomic_folder, read_json, write_json

MANIFEST = "manifest.json"


@dataclass
class PrepareConfig(SubsetConfig):
    """Data preparation (YAML section ``data``); subset fields come from ``SubsetConfig``."""

    val_images: int = 4
    val_source: int = 0
    val_seed: int = 0
    split: str | None = None
    patch_size: int = 256
    stride: int = 128


def choose_validation(
    samples: list[Sample], n_val: int = 4, from_source: str | None = None, seed: int = 0
) -> list[str]:
    """Names (sorted) of ``n_val`` whole images drawn by ``seed`` from folder ``from_source``.

    ``from_source`` defaults to the first sample's folder.
    """
    if not samples:
        return []
    from_source = samples[0].source if from_source is None else str(from_source)
    candidates = sorted(s.name for s in samples if s.source == from_source)
    if n_val > len(candidates):
        raise DataError(
            from_source, f"holds {len(candidates)} images; cannot hold out {n_val} for validation"
        )
    rng = np.random.default_rng(seed)
    return sorted(candidates[i] for i in rng.permutation(len(candidates))[:n_val])


def prepare(
    folders: list[str | os.PathLike],
    out: str | os.PathLike,
    cfg: PrepareConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load and validate ``folders``, write ``val/``, ``patches/``, ``subsets/`` and the
    top-level manifest under ``out``; return that manifest (see module docstring)."""
    cfg = cfg or PrepareConfig()
    folders = [Path(f).resolve() for f in folders]
    out = Path(out)
    if not 0 <= cfg.val_source < len(folders):
        raise DataError("config", f"val_source {cfg.val_source} is not a folder index")
    samples = load_folders(folders, progress)
    groups: dict[str, str] = {}
    if cfg.split:
        train, groups = read_split(cfg.split, [s.name for s in samples])
        val = sorted(groups)
        pool = [s for s in samples if s.name in train]
    else:
        val = choose_validation(
            samples, cfg.val_images, str(folders[cfg.val_source]), cfg.val_seed
        )
        pool = [s for s in samples if s.name not in val]
    if not pool:
        raise DataError(out, "no images left for the training pool after the validation split")
    _write_val(out / "val", [s for s in samples if s.name in val])
    patch_manifest = cut_patches(pool, cfg.patch_size, cfg.stride, out / "patches", progress)
    layout = {
        "folders": [str(f) for f in folders],
        "sources": {s.name: s.source for s in samples},
        "val": val,
        "groups": groups,
        "pool": [s.name for s in pool],
        "patches": {
            "dir": "patches",
            "manifest": f"patches/{PATCH_MANIFEST}",
            "size": cfg.patch_size,
            "stride": cfg.stride,
            "n_patches": len(patch_manifest["patches"]),
        },
    }
    subsets = _previous_subsets(out, layout)
    patches = patch_manifest["patches"]
    subsets.update(write_subsets(out / "subsets", patches, cfg, out / "patches", progress))
    manifest = {**layout, "config": to_dict(cfg), "subsets": dict(sorted(subsets.items()))}
    write_json(out / MANIFEST, manifest)
    return manifest


def read_split(path: str | os.PathLike, names: list[str]) -> tuple[set[str], dict[str, str]]:
    """A split file -> (training image names, {held-out image name: its group}).

    The file is JSON with a ``train`` list and one or more lists whose key starts with
    ``test`` (their key is the group); other keys are ignored. Every listed name must be among
    ``names`` (the images read) and in one list only.
    """
    split = read_json(path)
    tests = _test_lists(split)
    if not isinstance(split.get("train"), list) or not tests:
        raise DataError(path, "a split file needs a 'train' list and at least one 'test...' list")
    listed = list(split["train"]) + [n for v in tests.values() for n in v]
    missing = sorted(set(listed) - set(names))
    if missing:
        raise DataError(
            path, f"{len(missing)} listed image(s) not found in the data folders: {missing[:3]}"
        )
    twice = sorted({n for n in listed if listed.count(n) > 1})
    if twice:
        raise DataError(path, f"image(s) listed more than once: {twice[:3]}")
    return set(split["train"]), {n: k for k, v in tests.items() for n in v}


def split_groups(path: str | os.PathLike) -> dict[str, str]:
    """{held-out image name: group} as a split file lists them (names not checked against any
    data: for reports made where the prepared folder is not)."""
    return {n: k for k, v in _test_lists(read_json(path)).items() for n in v}


def _test_lists(split: dict) -> dict[str, list]:
    """The held-out lists of a split file: keys starting with ``test`` (the key is the group)."""
    return {k: v for k, v in split.items() if k.startswith("test") and isinstance(v, list)}


def load_groups(data_dir: str | os.PathLike) -> dict[str, str]:
    """{held-out image name: group} of a prepared folder (empty without a split file)."""
    manifest = Path(data_dir) / MANIFEST
    return read_json(manifest).get("groups", {}) if manifest.is_file() else {}


def _write_val(val_dir: Path, samples: list[Sample]) -> None:
    keep = set()
    for s in samples:
        keep.add(write_image(val_dir / "images" / f"{s.name}.png", s.image))
        keep.add(write_instance_map(val_dir / "labels" / f"{s.name}.png", s.instance_map))
    remove_stale(val_dir, ("images", "labels"), {p.relative_to(val_dir).as_posix() for p in keep})


def _previous_subsets(out: Path, layout: dict[str, Any]) -> dict[str, Any]:
    """Subsets listed by an earlier run on the same pool; stale ones are deleted."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    old = read_json(path)
    same = all(old.get(k) == v for k, v in layout.items())
    kept = {}
    for name, info in (old.get("subsets") or {}).items():
        file = out / "subsets" / name
        if same and file.is_file():
            kept[name] = info
        elif not same and file.is_file():
            file.unlink()
    return kept


def load_subset(data_dir: str | os.PathLike, fraction: float, seed: int = 0) -> list[Sample]:
    """The patches of subset ``frac{fraction:.2f}_seed{seed}`` as ``Sample``s (name = patch
    name, image ``uint8 (S, S, 3)``, instance map ``int32 (S, S)`` with ids 1..N)."""
    data_dir = Path(data_dir)
    path = data_dir / "subsets" / subset_filename(fraction, seed)
    if not path.is_file():
        have = sorted(p.name for p in (data_dir / "subsets").glob("*.json"))
        raise DataError(path, f"no such subset; available: {have or 'none'}")
    names = read_json(path)["patches"]
    entries = {p["name"]: p for p in read_json(data_dir / "patches" / PATCH_MANIFEST)["patches"]}
    samples = []
    for name in names:
        if name not in entries:
            raise DataError(path, f"patch {name} is not in patches/{PATCH_MANIFEST}")
        e = entries[name]
        image = read_image(data_dir / "patches" / e["image_file"])
        inst = read_instance_map(data_dir / "patches" / e["label_file"])
        samples.append(Sample(name, image, inst, e["source"]))
    return samples


def write_subset_folders(data_dir: str | os.PathLike) -> list[Path]:
    """Each subset of a prepared folder as a paired folder ``subsets/<subset>/`` (images/ +
    labels/, hard links to its patches where the file system allows, else copies): what
    ``nudiff segment train --real`` and ``nudiff synthesize --real`` take. Written atomically;
    a subset whose folder is there already is kept."""
    data_dir = Path(data_dir)
    entries = {p["name"]: p for p in read_json(data_dir / "patches" / PATCH_MANIFEST)["patches"]}
    folders = []
    for path in sorted((data_dir / "subsets").glob("*.json")):
        folder = path.with_suffix("")
        folders.append(folder)
        if folder.is_dir():
            continue
        with atomic_folder(folder) as tmp:
            for name in read_json(path)["patches"]:
                for key in ("image_file", "label_file"):
                    src = data_dir / "patches" / entries[name][key]
                    dest = tmp / entries[name][key]  # images/<patch>.png, labels/<patch>.png
                    dest.parent.mkdir(exist_ok=True)
                    try:
                        os.link(src, dest)
                    except OSError:
                        shutil.copyfile(src, dest)
    return folders


def load_val(data_dir: str | os.PathLike) -> list[Sample]:
    """The whole validation images of a prepared folder; ``source`` is their original folder."""
    data_dir = Path(data_dir)
    samples = load_folder(data_dir / "val", progress=False)
    manifest = data_dir / MANIFEST
    sources = read_json(manifest).get("sources", {}) if manifest.is_file() else {}
    for s in samples:
        s.source = sources.get(s.name, s.source)
    return samples
