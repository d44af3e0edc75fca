"""Annotation formats: MoNuSeg/Kumar XML polygons in, QuPath GeoJSON out.

Coordinates: MoNuSeg XML vertices ``X, Y`` are pixel positions (x = column, y = row) with
pixel centres at integers, as skimage draws them. GeoJSON output follows QuPath, where pixel
``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so contours traced through pixel
centres are shifted by +0.5 and outlines run along pixel edges.
"""

from __future__ import annotations

import json
import os
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon
from skimage.measure import find_contours

from nudiff.structure import relabel
from nudiff.utils import DataError, write_text

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


def _outer_ring(mask: np.ndarray, offset: tuple[int, int], scale: float = 1.0) -> list[list[float]]:
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
