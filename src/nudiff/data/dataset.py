"""Paired folders: ``<dir>/images/<name>.<ext>`` + ``<dir>/labels/<name>.<ext>``.

Images and labels are paired **by file stem**, never by sort order. Labels may be PNG/TIFF/
``.npy``/``.mat`` instance maps or MoNuSeg ``.xml`` polygons (rasterised to the image's size).
Validation reads the whole folder, collects every problem, then raises a single ``DataError``
listing each one on its own line; nothing is silently skipped. Hidden files (``.name``) are
ignored; any other file of an unsupported type is a problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nudiff.data.formats import read_monuseg_xml
from nudiff.data.io import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_image, read_instance_map
from nudiff.utils import DataError, progress_bar

PAIR_LABEL_SUFFIXES = LABEL_SUFFIXES + (".xml",)


@dataclass(frozen=True)
class Pair:
    """One image file and its label file, matched by stem ``name``."""

    name: str
    image_path: Path
    label_path: Path


@dataclass
class Sample:
    """A loaded image with its instance map.

    Attributes:
        name: file stem (or patch name), unique within a dataset.
        image: ``uint8 (H, W, 3)`` RGB.
        instance_map: ``int32 (H, W)``, 0 = background, positive ids = nuclei.
        source: the folder the image came from (as given to ``load_folder``).
    """

    name: str
    image: np.ndarray
    instance_map: np.ndarray
    source: str


def raise_problems(where: str | os.PathLike, problems: list[str]) -> None:
    """Raise one ``DataError`` listing ``problems`` (one per line), if there are any."""
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        n = len(problems)
        raise DataError(where, f"{n} problem{'s' if n > 1 else ''} found:\n{lines}")


def _index(folder: Path, suffixes: tuple[str, ...], problems: list[str]) -> dict[str, Path]:
    """Map stem -> file for the visible files of ``folder``, noting odd or duplicate files."""
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file() or path.suffix.lower() not in suffixes:
            problems.append(f"{path}: unsupported file (expected one of {', '.join(suffixes)})")
        elif path.stem in by_stem:
            problems.append(f"{path}: same name as {by_stem[path.stem].name}; keep one of them")
        else:
            by_stem[path.stem] = path
    return by_stem


def _find_pairs(folder: Path, problems: list[str]) -> list[Pair]:
    images_dir, labels_dir = folder / "images", folder / "labels"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            problems.append(f"{d}: folder not found (expected <dir>/images and <dir>/labels)")
    if problems:
        return []
    images = _index(images_dir, IMAGE_SUFFIXES, problems)
    labels = _index(labels_dir, PAIR_LABEL_SUFFIXES, problems)
    for stem in sorted(set(images) - set(labels)):
        problems.append(f"{images[stem]}: no label named {stem}.* in {labels_dir}")
    for stem in sorted(set(labels) - set(images)):
        problems.append(f"{labels[stem]}: no image named {stem}.* in {images_dir}")
    pairs = [Pair(s, images[s], labels[s]) for s in sorted(set(images) & set(labels))]
    if not pairs and not problems:
        problems.append(f"{images_dir}: no images found")
    return pairs


def find_pairs(folder: str | os.PathLike) -> list[Pair]:
    """All image/label pairs of a paired folder, sorted by name.

    Raises one ``DataError`` listing every missing partner, duplicate stem or unsupported file.
    """
    folder = Path(folder)
    problems: list[str] = []
    pairs = _find_pairs(folder, problems)
    raise_problems(folder, problems)
    return pairs


def load_pair(pair: Pair, source: str = "") -> Sample:
    """Read and check one pair; raises ``DataError`` naming the offending file."""
    image = read_image(pair.image_path)
    if pair.label_path.suffix.lower() == ".xml":
        inst = read_monuseg_xml(pair.label_path, image.shape[:2])
    else:
        inst = read_instance_map(pair.label_path)
    if inst.shape != image.shape[:2]:
        raise DataError(
            pair.label_path,
            f"label shape {inst.shape} differs from image {pair.image_path.name} "
            f"shape {image.shape[:2]}",
        )
    return Sample(pair.name, image, inst, source)


def _load_folder(folder: Path, problems: list[str], progress: bool) -> list[Sample]:
    pairs = _find_pairs(folder, problems)
    samples = []
    for pair in progress_bar(
        pairs, desc=f"reading {folder.name}", unit="image", disable=not progress
    ):
        try:
            samples.append(load_pair(pair, str(folder)))
        except DataError as e:
            problems.append(str(e))
    return samples


def load_folder(folder: str | os.PathLike, progress: bool = True) -> list[Sample]:
    """Load and validate a whole paired folder; ``Sample.source`` is ``str(folder)``.

    Every problem (missing partner, unreadable/empty/corrupt file, non-RGB image,
    non-integer or negative labels, image/label shape mismatch) is collected first, then
    reported together in one ``DataError``.
    """
    folder = Path(folder)
    problems: list[str] = []
    samples = _load_folder(folder, problems, progress)
    raise_problems(folder, problems)
    return samples


def load_folders(folders: Iterable[str | os.PathLike], progress: bool = True) -> list[Sample]:
    """``load_folder`` over several folders; the problems of all are reported together.

    Image names must be unique across folders (they name patches and subsets).
    """
    folders = [Path(f) for f in folders]
    problems: list[str] = []
    samples = [s for f in folders for s in _load_folder(f, problems, progress)]
    seen: dict[str, str] = {}
    for s in samples:
        if s.name in seen:
            problems.append(f"{s.source}: image name {s.name} also occurs in {seen[s.name]}")
        seen.setdefault(s.name, s.source)
    raise_problems(", ".join(map(str, folders)), problems)
    return samples
