"""Annotation formats: MoNuSeg/Kumar XML polygons in, QuPath GeoJSON out, and the on-disk
formats of paired folders that other trainers read (:data:`PAIR_FORMATS`, see
docs/synthetic-formats.md).

Coordinates: MoNuSeg XML vertices ``X, Y`` are pixel positions (x = column, y = row) with
pixel centres at integers, as skimage draws them. GeoJSON output follows QuPath, where pixel
``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so contours traced through pixel
centres are shifted by +0.5 and outlines run along pixel edges.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon
from skimage.measure import find_contours

from nudiff.structure import relabel
from nudiff.utils import DataError, NudiffError, atomic_path, read_json, write_json, write_text

NUCLEUS_COLOR = (255, 0, 0)
_UUID_NAMESPACE = uuid.UUID("6f1c7f4e-3c52-4a8e-9a0c-6e75d1f0b2a1")


def read_monuseg_xml(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a MoNuSeg/Kumar XML annotation into an instance map ``int32 (H, W)``.

    Every ``<Region>``'s ``<Vertex X= Y=>`` polygon is filled with ``skimage.draw.polygon``
    in file order; a later polygon overwrites an earlier one where they overlap. Ids are then
    relabelled 1..N in file order (regions fully covered by later ones vanish).

    Args:
        path: the ``.xml`` file.
        shape: ``(H, W)`` of the image it annotates; vertices outside are clipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(path, f"not valid XML ({e})") from None
    regions = root.findall(".//Region")
    if not regions:
        raise DataError(path, "no <Region> elements: not a MoNuSeg/Kumar annotation")
    nuclei = []
    for i, region in enumerate(regions, start=1):
        try:
            xy = np.array(
                [(float(v.attrib["X"]), float(v.attrib["Y"])) for v in region.iter("Vertex")]
            )
        except (KeyError, ValueError):
            raise DataError(path, f"region {i} has a vertex without numeric X and Y") from None
        nuclei.append([[xy]])
    return relabel(rasterise_polygons(nuclei, shape))


def rasterise_polygons(nuclei: list[list[list[np.ndarray]]], shape: tuple[int, ...]) -> np.ndarray:
    """Fill nuclei outlines into an instance map ``int32 (H, W)``; nucleus ``i`` gets id ``i + 1``.

    ``nuclei[i]`` is a list of polygons (one, or several for a GeoJSON MultiPolygon); a polygon
    is a list of rings ``float (N, 2)`` of ``(x, y)`` vertices in pixel-centre coordinates, the
    exterior first, then its holes. Each polygon is filled with ``skimage.draw.polygon``
    (vertices outside ``shape`` are clipped), minus its holes, in list order: a later nucleus
    overwrites an earlier one where they overlap. Rings of fewer than 3 vertices enclose no
    pixels. Ids are not renumbered (see :func:`nudiff.structure.relabel`).
    """
    inst = np.zeros(tuple(shape[:2]), np.int32)
    width = inst.shape[1]
    for i, polygons in enumerate(nuclei, start=1):
        for rings in polygons:
            if not len(rings) or len(rings[0]) < 3:
                continue  # a point or a line encloses no pixels
            rr, cc = draw_polygon(rings[0][:, 1], rings[0][:, 0], shape=inst.shape)
            holes = [h for h in rings[1:] if len(h) >= 3]
            if holes and rr.size:
                hole_px = np.concatenate(
                    [
                        np.ravel_multi_index(
                            draw_polygon(h[:, 1], h[:, 0], shape=inst.shape), inst.shape
                        )
                        for h in holes
                    ]
                )
                keep = ~np.isin(rr * width + cc, hole_px)
                rr, cc = rr[keep], cc[keep]
            inst[rr, cc] = i
    return inst


def instance_map_to_geojson(
    instance_map: np.ndarray,
    classification: str = "Nucleus",
    color: tuple[int, int, int] = NUCLEUS_COLOR,
    image_name: str = "",
) -> dict[str, Any]:
    """Instance map ``(H, W)`` int -> QuPath GeoJSON ``FeatureCollection`` of detections.

    One ``Polygon`` feature per nucleus: the outer boundary of its largest connected part
    (``skimage.measure.find_contours`` at level 0.5, closed, counter-clockwise in x/y, pixel
    edges as above); holes are not exported. ``properties.measurements.area`` is the nucleus'
    pixel count and ``instance_id`` its id in the map. Feature ids are UUIDs derived from
    ``image_name`` and the id, so the output is reproducible.
    """
    inst = np.asarray(instance_map)
    if inst.ndim != 2:
        raise ValueError(f"instance map must be 2-D (H, W), got shape {inst.shape}")
    features = []
    for label, sl in enumerate(ndi.find_objects(inst.astype(np.int64, copy=False)), start=1):
        if sl is None:
            continue
        mask = inst[sl] == label
        features.append(
            nucleus_feature(
                mask,
                (sl[0].start, sl[1].start),
                str(uuid.uuid5(_UUID_NAMESPACE, f"{image_name}/{label}")),
                {"area": int(mask.sum()), "instance_id": label},
                classification,
                color,
            )
        )
    return {"type": "FeatureCollection", "features": features}


def nucleus_feature(
    mask: np.ndarray,
    offset: tuple[int, int],
    feature_id: str,
    measurements: dict[str, float],
    classification: str = "Nucleus",
    color: tuple[int, int, int] = NUCLEUS_COLOR,
    scale: float = 1.0,
) -> dict[str, Any]:
    """One QuPath detection ``Feature`` for a nucleus given as a binary ``mask`` (h, w).

    ``offset`` is the mask's ``(row, col)`` in the image; the outline (see
    :func:`instance_map_to_geojson`) is multiplied by ``scale`` (e.g. a slide level's
    downsample, so that coordinates are full-resolution pixels). ``measurements`` is written
    as QuPath (>= 0.4) writes a measurement list: a ``{name: number}`` object.
    """
    ring = _outer_ring(mask, offset, scale)
    return {
        "type": "Feature",
        "id": feature_id,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": classification, "color": list(color)},
            "measurements": measurements,
        },
    }


def _outer_ring(
    mask: np.ndarray, offset: tuple[int, int], scale: float = 1.0
) -> list[list[float]]:
    """Closed outer contour ``[[x, y], ...]`` of the largest part of a binary mask."""
    padded = np.pad(mask, 1).astype(np.float32)
    contours = find_contours(padded, 0.5)
    best = max(contours, key=lambda c: abs(_signed_area(c)))
    xs = (best[:, 1] - 1 + offset[1] + 0.5) * scale
    ys = (best[:, 0] - 1 + offset[0] + 0.5) * scale
    ring = np.stack([xs, ys], axis=1)
    if _signed_area(ring) < 0:  # GeoJSON (RFC 7946): exterior rings counter-clockwise
        ring = ring[::-1]
    if not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    return np.round(ring, 3).tolist()


def _signed_area(points: np.ndarray) -> float:
    """Shoelace area; positive for counter-clockwise order of (a, b) = (x, y) points."""
    a, b = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(a, np.roll(b, -1)) - np.dot(b, np.roll(a, -1)))


def polygon_area(ring: list[list[float]]) -> float:
    """Absolute area of a closed GeoJSON ring ``[[x, y], ...]`` (in pixels)."""
    return abs(_signed_area(np.asarray(ring, dtype=np.float64)))


def write_geojson(
    path: str | os.PathLike, instance_map: np.ndarray, classification: str = "Nucleus"
) -> Path:
    """Write ``instance_map_to_geojson(instance_map)`` to ``path`` atomically; return it."""
    path = Path(path)
    collection = instance_map_to_geojson(instance_map, classification, image_name=path.stem)
    write_text(path, json.dumps(collection, separators=(",", ":")) + "\n")
    return path


# --- paired folders in the formats other trainers read ------------------------------------------
#
#   png       images/<name>.png (RGB)   + labels/<name>.png (16-bit ids; .tif above 65535 ids)
#   hovernet  Images/<name>.png (RGB)   + Labels/<name>.mat (inst_map, inst_centroid[, inst_type,
#             type_map]): the CoNSeP layout that HoVer-Net's extract_patches.py / dataset.py read
#   npy       images/<name>.npy (uint8 (H, W, 3)) + labels/<name>.npy (int32 (H, W))
#
# A type map, when the data carries one, is kept: in the .mat (hovernet) or as types/<name>.<label
# suffix> (png, npy).

PAIR_FORMATS = ("png", "hovernet", "npy")
_LAYOUT = {  # format -> (image folder, image suffix, label folder, label suffix)
    "png": ("images", ".png", "labels", ".png"),
    "hovernet": ("Images", ".png", "Labels", ".mat"),
    "npy": ("images", ".npy", "labels", ".npy"),
}
# what a pair folder may hold beside its pairs, carried over by convert_pairs
_EXTRAS = ("structures", "mosaic.png")
MANIFEST = "manifest.json"


def _check_format(pair_format: str) -> None:
    if pair_format not in PAIR_FORMATS:
        raise NudiffError(
            f"unknown pair format {pair_format!r}; use one of {', '.join(PAIR_FORMATS)}"
        )


def hovernet_labels(
    instance_map: np.ndarray, type_map: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The arrays of a HoVer-Net/CoNSeP label ``.mat`` for one instance map (pure).

    ``inst_map``: ``int32 (H, W)``, ids renumbered 1..N in the order of the old ids (HoVer-Net
    indexes its per-nucleus arrays by id - 1). ``inst_centroid``: ``float64 (N, 2)``, row ``k``
    the centre of mass of nucleus ``k + 1`` as ``(x, y)`` = (column, row), pixel centres at
    integers (what HoVer-Net's ``cv2.moments`` gives and ``compute_stats.py`` reads).
    With ``type_map`` (``(H, W)`` non-negative ints): ``type_map`` as ``int32`` and
    ``inst_type`` ``int32 (N, 1)``, each nucleus' most frequent type over its pixels (ties: the
    smaller type).
    """
    from nudiff.structure import relabel

    inst = relabel(np.asarray(instance_map))
    n = int(inst.max()) if inst.size else 0
    rows, cols = np.indices(inst.shape)
    flat = inst.ravel()
    count = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    x = np.bincount(flat, weights=cols.ravel(), minlength=n + 1)[1:] / np.maximum(count, 1)
    y = np.bincount(flat, weights=rows.ravel(), minlength=n + 1)[1:] / np.maximum(count, 1)
    out = {"inst_map": inst, "inst_centroid": np.stack([x, y], axis=1).reshape(n, 2)}
    if type_map is not None:
        types = np.asarray(type_map).astype(np.int64)
        if types.shape != inst.shape:
            raise ValueError(
                f"type map shape {types.shape} differs from instance map shape {inst.shape}"
            )
        out["inst_type"] = _majority_type(inst, types, n)
        out["type_map"] = types.astype(np.int32)
    return out


def _majority_type(inst: np.ndarray, types: np.ndarray, n: int) -> np.ndarray:
    inst_type = np.zeros((n, 1), np.int32)
    fg = inst > 0
    if not fg.any():
        return inst_type
    base = int(types.max()) + 1
    codes, counts = np.unique(inst[fg].astype(np.int64) * base + types[fg], return_counts=True)
    nucleus, kind = np.divmod(codes, base)
    order = np.lexsort(
        (kind, -counts, nucleus)
    )  # per nucleus: most pixels first, then smaller type
    first = np.unique(nucleus[order], return_index=True)[1]
    inst_type[nucleus[order][first] - 1, 0] = kind[order][first]
    return inst_type


def write_hovernet_mat(
    path: str | os.PathLike, instance_map: np.ndarray, type_map: np.ndarray | None = None
) -> Path:
    """Write :func:`hovernet_labels` to a (compressed, MATLAB 5) ``.mat`` atomically; return it."""
    import scipy.io

    path = Path(path)
    labels = hovernet_labels(instance_map, type_map)
    with atomic_path(path) as tmp:
        scipy.io.savemat(tmp, labels, do_compression=True)
    return path


def _write_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
    return path


def _suffixes(pair_format: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(image suffixes, label suffixes) a ``pair_format`` folder is read with: besides what
    :func:`write_pair` writes, png reads any image/label the data layer reads (a png label of
    more than 65535 ids is a ``.tif``), hovernet any image HoVer-Net's loader may be set to."""
    from nudiff.data.io import IMAGE_SUFFIXES, LABEL_SUFFIXES

    _, image_suffix, _, label_suffix = _LAYOUT[pair_format]
    images = (image_suffix,) if pair_format == "npy" else (image_suffix,) + IMAGE_SUFFIXES
    labels = (label_suffix,) + LABEL_SUFFIXES if pair_format == "png" else (label_suffix,)
    return images, labels


def _existing(folder: Path, name: str, suffixes: tuple[str, ...]) -> Path:
    """``folder/name<suffix>`` for the first suffix whose file exists, else the first suffix."""
    for suffix in suffixes:
        if (folder / f"{name}{suffix}").exists():
            return folder / f"{name}{suffix}"
    return folder / f"{name}{suffixes[0]}"


def pair_paths(folder: str | os.PathLike, name: str, pair_format: str) -> tuple[Path, Path]:
    """``(image file, label file)`` of pair ``name`` in a ``pair_format`` folder: the files there
    (see :func:`_suffixes`), or where :func:`write_pair` puts them."""
    _check_format(pair_format)
    folder = Path(folder)
    image_dir, _, label_dir, _ = _LAYOUT[pair_format]
    image_suffixes, label_suffixes = _suffixes(pair_format)
    return _existing(folder / image_dir, name, image_suffixes), _existing(
        folder / label_dir, name, label_suffixes
    )


def write_pair(
    folder: str | os.PathLike,
    name: str,
    image: np.ndarray,
    instance_map: np.ndarray,
    pair_format: str = "png",
    type_map: np.ndarray | None = None,
) -> list[Path]:
    """Write one image / instance-map pair into ``folder`` in ``pair_format``; every file
    atomically.

    Args:
        image: ``uint8 (H, W, 3)`` RGB.
        instance_map: ``(H, W)`` non-negative integer ids, 0 = background (hovernet: renumbered
            1..N, see :func:`hovernet_labels`).
        type_map: optional ``(H, W)`` nucleus types, kept as the layout above says.
    Returns the files written.
    """
    from nudiff.data.io import write_image, write_instance_map

    _check_format(pair_format)
    image, inst = np.asarray(image), np.asarray(instance_map)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if inst.shape != image.shape[:2]:
        raise ValueError(
            f"{name}: instance map shape {inst.shape} differs from image shape {image.shape[:2]}"
        )
    image_dir, image_suffix, label_dir, label_suffix = _LAYOUT[pair_format]
    image_path = Path(folder) / image_dir / f"{name}{image_suffix}"
    label_path = Path(folder) / label_dir / f"{name}{label_suffix}"
    if pair_format == "npy":
        written = [_write_npy(image_path, image)]
    else:
        written = [write_image(image_path, image)]
    if pair_format == "hovernet":
        written.append(write_hovernet_mat(label_path, inst, type_map))
        return written
    written.append(write_instance_map(label_path, inst))
    if type_map is not None:
        written.append(
            write_instance_map(Path(folder) / "types" / label_path.name, np.asarray(type_map))
        )
    return written


def _read_npy_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(path, f"not a readable .npy array ({type(e).__name__})") from None
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
        raise DataError(path, f"expected a uint8 (H, W, 3) RGB image, got {arr.dtype} {arr.shape}")
    return arr


def read_pair(
    folder: str | os.PathLike, name: str, pair_format: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(image uint8 (H, W, 3), instance map int32 (H, W), type map int32 (H, W) or None)`` of
    pair ``name``; a missing, unreadable or mismatched file raises ``DataError`` naming it."""
    from nudiff.data.io import read_image, read_instance_map, read_type_map

    image_path, label_path = pair_paths(folder, name, pair_format)
    image = _read_npy_image(image_path) if pair_format == "npy" else read_image(image_path)
    inst = read_instance_map(label_path)
    if inst.shape != image.shape[:2]:
        raise DataError(
            label_path,
            f"label shape {inst.shape} differs from image {image_path.name} "
            f"shape {image.shape[:2]}",
        )
    if pair_format == "hovernet":
        types = read_type_map(label_path)
    else:
        type_path = Path(folder) / "types" / label_path.name
        types = read_instance_map(type_path) if type_path.exists() else None
    if types is not None and types.shape != inst.shape:
        raise DataError(
            label_path,
            f"type map shape {types.shape} differs from the instance map's {inst.shape}",
        )
    return image, inst, types


def detect_pair_format(folder: str | os.PathLike) -> str:
    """The format of a paired folder: its manifest's ``format``, else its layout."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if manifest.is_file():
        content = read_json(manifest)
        recorded = content.get("format") if isinstance(content, dict) else None
        if recorded is not None:
            if recorded not in PAIR_FORMATS:
                raise DataError(
                    manifest,
                    f"unknown pair format {recorded!r} (known: {', '.join(PAIR_FORMATS)})",
                )
            return recorded
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    if (folder / "Images").is_dir() and (folder / "Labels").is_dir():
        return "hovernet"
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        return "npy" if any((folder / "images").glob("*.npy")) else "png"
    raise DataError(
        folder,
        "not a paired folder: expected images/ + labels/ (png, npy) "
        "or Images/ + Labels/ (hovernet)",
    )


def pair_names(folder: str | os.PathLike, pair_format: str) -> list[str]:
    """Sorted names of the pairs of a ``pair_format`` folder. An image without its label (or a
    label without its image) raises ``DataError`` naming it; hidden files are ignored."""
    _check_format(pair_format)
    folder = Path(folder)
    image_dir, image_suffix, label_dir, label_suffix = _LAYOUT[pair_format]
    found = {}
    for sub, suffixes in zip((image_dir, label_dir), _suffixes(pair_format)):
        if not (folder / sub).is_dir():
            raise DataError(
                folder / sub,
                f"folder not found ({pair_format} pairs need {image_dir}/ + {label_dir}/)",
            )
        found[sub] = {
            p.stem: p
            for p in sorted((folder / sub).iterdir())
            if not p.name.startswith(".") and p.suffix.lower() in suffixes
        }
    images, labels = found[image_dir], found[label_dir]
    for stem in sorted(set(images) ^ set(labels)):
        if stem in images:
            raise DataError(images[stem], f"no label {stem}{label_suffix} in {folder / label_dir}")
        raise DataError(labels[stem], f"no image {stem}{image_suffix} in {folder / image_dir}")
    return sorted(images)


def convert_pairs(
    source: str | os.PathLike, out: str | os.PathLike, to: str, progress: bool = True
) -> dict:
    """Copy the paired folder ``source`` (any :data:`PAIR_FORMATS`, see :func:`detect_pair_format`)
    to the new folder ``out`` in format ``to``; returns ``out``'s manifest.

    Every pair is read and checked, then written into a temporary folder beside ``out`` that is
    renamed to ``out`` only when all pairs are written: on any problem (``DataError`` naming the
    file) nothing is left behind. The source's manifest is kept with ``format`` set to ``to``,
    ``converted_from`` and ``n_pairs`` added (a folder without one gets these three); its
    ``structures/`` and ``mosaic.png`` are copied (a filtered set's ``unfiltered/`` is not).
    """
    from nudiff.utils import progress_bar

    _check_format(to)
    source, out = Path(source), Path(out)
    source_format = detect_pair_format(source)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(out, "already exists and is not empty; choose a new --out")
    names = pair_names(source, source_format)
    if not names:
        raise DataError(source, f"no {source_format} pairs found")
    manifest_path = source / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    if not isinstance(manifest, dict):
        raise DataError(manifest_path, "not a JSON object")
    manifest = manifest | {"format": to, "converted_from": str(source), "n_pairs": len(names)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name in progress_bar(
            names, desc=f"{source_format} -> {to}", unit="pair", disable=not progress
        ):
            image, inst, types = read_pair(source, name, source_format)
            write_pair(tmp, name, image, inst, to, types)
        for extra in _EXTRAS:
            if (source / extra).is_dir():
                shutil.copytree(source / extra, tmp / extra)
            elif (source / extra).is_file():
                shutil.copyfile(source / extra, tmp / extra)
        write_json(tmp / MANIFEST, manifest)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest
