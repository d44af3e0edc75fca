"""QuPath GeoJSON annotations of a slide -> paired folders (image crops + 16-bit instance maps).

What is read (QuPath's own GeoJSON, >= 0.2): a ``FeatureCollection``, a single ``Feature`` or
a JSON list of features; ``Polygon`` and ``MultiPolygon`` geometries with holes; cell objects'
``nucleusGeometry``; ``properties.classification`` (``{"name": ...}`` or a string) kept as
the nucleus type; children nested in ``properties.childObjects`` (or ``children``).

Regions and nuclei: with ``--regions FILE`` every feature of that file is a region and every
feature of the annotation file a nucleus. Without it, QuPath's hierarchy decides: top-level
annotations (``objectType`` "annotation", or none, which QuPath reads as an annotation) are
regions; detections, cells and any object nested in an annotation are nuclei. A region is
cropped to its bounding box.

Coordinates are level-0 pixels with pixel edges at integers (QuPath); they are shifted by
-0.5 to pixel centres and filled exactly as MoNuSeg XML polygons are
(:func:`nudiff.data.formats.rasterise_polygons`): later nuclei overwrite earlier ones, ids are
renumbered 1..N in file order, and a nucleus cut by the region border is kept as cut.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nudiff.data.formats import rasterise_polygons
from nudiff.data.slide import SLIDE_SUFFIXES, open_slide
from nudiff.structure import relabel
from nudiff.utils import DataError, read_json, write_json

TYPES_FILE = "types.json"
REGION_TYPES = ("annotation", "PathAnnotationObject", "unknown")


@dataclass
class Nucleus:
    """One nucleus outline: polygons as in :func:`rasterise_polygons`, level-0 pixel edges."""

    index: int  # feature number in the file, 1-based, depth first (for messages)
    polygons: list[list[np.ndarray]]
    classification: str | None
    bbox: tuple[float, float, float, float] = field(init=False)  # x0, y0, x1, y1

    def __post_init__(self) -> None:
        xy = np.concatenate([rings[0] for rings in self.polygons])
        self.bbox = (*xy.min(axis=0), *xy.max(axis=0))


@dataclass
class Region:
    """An annotated rectangle in level-0 pixels: ``[x0, x1) x [y0, y1)``."""

    index: int
    x0: float
    y0: float
    x1: float
    y1: float
    name: str | None = None


def read_geojson_features(path: str | os.PathLike) -> list[tuple[int, dict, int | None]]:
    """All features of a GeoJSON file, children flattened depth first.

    Returns ``(number, feature, parent number or None)`` with numbers 1, 2, ... in file order.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    doc = read_json(path)
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        top = doc.get("features")
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        top = [doc]
    elif isinstance(doc, list):
        top = doc
    else:
        raise DataError(path, "not GeoJSON: expected a FeatureCollection, a Feature or a list")
    if not isinstance(top, list):
        raise DataError(path, "FeatureCollection without a 'features' list")
    out: list[tuple[int, dict, int | None]] = []

    def visit(feature: Any, parent: int | None) -> None:
        if not isinstance(feature, dict):
            raise DataError(path, f"feature {len(out) + 1} is not a JSON object")
        number = len(out) + 1
        out.append((number, feature, parent))
        props = feature.get("properties") or {}
        children = (
            props.get("childObjects", props.get("children")) if isinstance(props, dict) else None
        )
        for child in children if isinstance(children, list) else []:
            visit(child, number)

    for feature in top:
        visit(feature, None)
    return out


@dataclass
class Annotations:
    """A parsed export: regions, nuclei, problems found (one line each) and whether every
    region parsed (if not, nuclei cannot be checked against the regions)."""

    regions: list[Region]
    nuclei: list[Nucleus]
    problems: list[str]
    regions_complete: bool


def parse_annotations(
    geojson: str | os.PathLike, regions_file: str | os.PathLike | None = None
) -> Annotations:
    """Regions and nuclei of a QuPath export (see the module docstring) and the problems found.

    Problems (one line each, naming the file and the feature): geometry that is not a
    polygon, empty polygons, self-intersecting rings, non-numeric coordinates.
    """
    geojson = Path(geojson)
    features = read_geojson_features(geojson)
    problems: list[str] = []
    if regions_file is not None:
        regions = _regions(Path(regions_file), read_geojson_features(regions_file), problems)
        nucleus_features = features
    else:
        is_region = [
            parent is None and _object_type(f) in REGION_TYPES for _, f, parent in features
        ]
        regions = _regions(geojson, [x for x, r in zip(features, is_region) if r], problems)
        nucleus_features = [x for x, r in zip(features, is_region) if not r]
    regions_complete = not problems
    nuclei = []
    for number, feature, _ in nucleus_features:
        geometry = feature.get("nucleusGeometry") or feature.get("geometry")
        polygons = _polygons(geojson, number, geometry, problems)
        if polygons is not None:
            nuclei.append(Nucleus(number, polygons, _classification(feature)))
    if not regions and not problems:
        problems.append(
            f"{geojson}: no regions: add QuPath annotations around the annotated nuclei, "
            "or pass rectangles with --regions"
        )
    if not nucleus_features and not problems:
        problems.append(
            f"{geojson}: no nuclei (detections); if the nuclei are annotations, give the "
            "regions with --regions"
        )
    return Annotations(regions, nuclei, problems, regions_complete)


def check_on_slide(
    path: str | os.PathLike,
    regions: list[Region],
    nuclei: list[Nucleus],
    slide_size: tuple[int, int],
    check_orphans: bool = True,
) -> tuple[list[list[Nucleus]], list[str]]:
    """Nuclei per region (a nucleus overlapping two regions goes to both) and the problems:
    coordinates outside the slide (``slide_size`` = level-0 ``(width, height)``) and, if
    ``check_orphans``, nuclei outside every region."""
    width, height = slide_size
    problems = []

    def outside(x0: float, y0: float, x1: float, y1: float) -> bool:
        return x0 < 0 or y0 < 0 or x1 > width or y1 > height

    for r in regions:
        if outside(r.x0, r.y0, r.x1, r.y1):
            problems.append(
                f"{path}: feature {r.index} (region x {r.x0:g}..{r.x1:g}, y {r.y0:g}..{r.y1:g}) "
                f"lies outside the slide ({width} x {height} at level 0)"
            )
    members: list[list[Nucleus]] = [[] for _ in regions]
    for n in nuclei:
        x0, y0, x1, y1 = n.bbox
        if outside(x0, y0, x1, y1):
            problems.append(
                f"{path}: feature {n.index} (nucleus at x {x0:.0f}, y {y0:.0f}) has coordinates "
                f"outside the slide ({width} x {height} at level 0)"
            )
            continue
        hits = [
            i for i, r in enumerate(regions) if x0 < r.x1 and x1 > r.x0 and y0 < r.y1 and y1 > r.y0
        ]
        if not hits and check_orphans:
            problems.append(
                f"{path}: feature {n.index} (nucleus at x {x0:.0f}, y {y0:.0f}) is outside every "
                "region"
            )
        for i in hits:
            members[i].append(n)
    return members, problems


def region_window(region: Region, scale: float) -> tuple[int, int, int, int]:
    """A region's ``(x, y, w, h)`` in working pixels (``scale`` level-0 px per working px)."""
    x0, y0 = round(region.x0 / scale), round(region.y0 / scale)
    x1, y1 = round(region.x1 / scale), round(region.y1 / scale)
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def region_instance_map(
    window: tuple[int, int, int, int], nuclei: list[Nucleus], scale: float = 1.0
) -> tuple[np.ndarray, dict[int, str]]:
    """Rasterise ``nuclei`` (level-0 coordinates) into the working-pixel ``window`` (x, y, w, h).

    Returns the instance map ``int32 (h, w)`` with ids 1..N in file order and
    ``{id: classification}`` for the classified nuclei.
    """
    x, y, w, h = window
    shifted = [
        [[ring / scale - 0.5 - np.array([x, y]) for ring in rings] for rings in n.polygons]
        for n in nuclei
    ]
    raw = rasterise_polygons(shifted, (h, w))
    inst = relabel(raw)
    present = np.unique(raw)
    present = present[present > 0]
    types = {
        new: nuclei[old - 1].classification
        for new, old in enumerate(present.tolist(), start=1)
        if nuclei[old - 1].classification is not None
    }
    return inst, types


def convert_slides(
    pairs: list[tuple[Path, Path]],
    out: str | os.PathLike,
    level: int | None = None,
    mpp: float | None = None,
    regions_file: str | os.PathLike | None = None,
) -> list[str]:
    """Convert ``(geojson, slide)`` pairs into ``out/images``, ``out/labels`` and
    ``out/types.json``; return the image names written.

    Every file is checked first; if any problem is found a ``DataError`` lists them all (one
    line each) and nothing is written. Names are ``<slide stem>_x<X>_y<Y>`` (the region's
    level-0 origin).
    """
    out = Path(out)
    jobs, problems = [], []
    for geojson, slide_path in pairs:
        try:
            a = parse_annotations(geojson, regions_file)
            problems += a.problems
            view = open_slide(slide_path, level=level, mpp=mpp)
            jobs.append((geojson, view, a.regions, []))
            level0 = view.slide.level_dimensions[0]
            members, found = check_on_slide(
                geojson, a.regions, a.nuclei, level0, a.regions_complete
            )
            problems += found
            jobs[-1] = (geojson, view, a.regions, members)
        except DataError as e:
            problems.append(str(e))
    if problems:
        for _, view, _, _ in jobs:
            view.close()
        n = len(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(out, f"{n} problem{'s' if n > 1 else ''} found, nothing written:\n{lines}")
    from nudiff.data.io import write_image, write_instance_map

    manifest = _read_types(out)
    written = []
    for geojson, view, regions, members in jobs:
        with view:
            for region, nuclei in zip(regions, members):
                name = _unique_name(view.path.stem, region, written)
                window = region_window(region, view.scale)
                inst, types = region_instance_map(window, nuclei, view.scale)
                write_image(out / "images" / f"{name}.png", view.read(*window))
                write_instance_map(out / "labels" / f"{name}.png", inst)
                manifest["images"][name] = {
                    "slide": str(view.path),
                    "geojson": str(geojson),
                    "region_level0": [
                        region.x0,
                        region.y0,
                        region.x1 - region.x0,
                        region.y1 - region.y0,
                    ],
                    "level": view.level,
                    "scale": view.scale,
                    "mpp": view.mpp,
                    "n_nuclei": int(inst.max()),
                    "types": {str(k): v for k, v in types.items()},
                }
                written.append(name)
    classes = {c for info in manifest["images"].values() for c in info["types"].values()}
    manifest["classes"] = sorted(classes)
    write_json(out / TYPES_FILE, manifest)
    return written


def pair_folder(geojson_dir: Path, slide_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Match ``geojson_dir/<stem>.geojson`` (or ``.json``) with ``slide_dir/<stem>.<slide>``."""
    problems = []
    for folder in (geojson_dir, slide_dir):
        if not folder.is_dir():
            raise DataError(folder, "folder not found")
    slides = {
        p.stem: p
        for p in sorted(slide_dir.iterdir())
        if p.suffix.lower() in SLIDE_SUFFIXES and not p.name.startswith(".")
    }
    pairs = []
    for g in sorted(geojson_dir.iterdir()):
        if g.suffix.lower() not in (".geojson", ".json") or g.name.startswith("."):
            continue
        if g.stem in slides:
            pairs.append((g, slides[g.stem]))
        else:
            problems.append(f"{g}: no slide named {g.stem}.* in {slide_dir}")
    if not pairs and not problems:
        problems.append(f"{geojson_dir}: no .geojson files")
    return pairs, problems


def _read_types(out: Path) -> dict:
    path = out / TYPES_FILE
    if path.exists():
        manifest = read_json(path)
        if isinstance(manifest, dict) and isinstance(manifest.get("images"), dict):
            return manifest
    return {"images": {}, "classes": []}


def _unique_name(stem: str, region: Region, taken: list[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    name = f"{stem}_x{math.floor(region.x0)}_y{math.floor(region.y0)}"
    k, base = 1, name
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _object_type(feature: dict) -> str:
    props = feature.get("properties")
    if not isinstance(props, dict):
        return "unknown"
    return str(props.get("objectType", props.get("object_type", props.get("type", "unknown"))))


def _classification(feature: dict) -> str | None:
    props = feature.get("properties")
    c = props.get("classification") if isinstance(props, dict) else None
    if isinstance(c, str):
        return c
    if isinstance(c, dict):
        if isinstance(c.get("name"), str):
            return c["name"]
        if isinstance(c.get("names"), list):
            return ": ".join(map(str, c["names"]))
    return None


def _regions(path: Path, features: list, problems: list[str]) -> list[Region]:
    regions = []
    for number, feature, _ in features:
        polygons = _polygons(path, number, feature.get("geometry"), problems)
        if polygons is None:
            continue
        xy = np.concatenate([rings[0] for rings in polygons])
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        props = feature.get("properties")
        name = props.get("name") if isinstance(props, dict) else None
        regions.append(Region(number, float(x0), float(y0), float(x1), float(y1), name))
    return regions


def _polygons(
    path: Path, number: int, geometry: Any, problems: list[str]
) -> list[list[np.ndarray]] | None:
    """GeoJSON Polygon / MultiPolygon -> list of polygons (list of rings float64 (N, 2))."""
    where = f"{path}: feature {number}"
    if not isinstance(geometry, dict):
        problems.append(f"{where} has no geometry")
        return None
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        raw = [coords]
    elif kind == "MultiPolygon":
        raw = coords
    else:
        problems.append(f"{where}: geometry {kind} is not a Polygon or MultiPolygon")
        return None
    try:
        polygons = [
            [np.asarray(ring, np.float64).reshape(-1, 2) for ring in rings] for rings in raw
        ]
    except (TypeError, ValueError):
        problems.append(f"{where}: coordinates are not [x, y] number pairs")
        return None
    if not polygons or any(
        not rings or not np.isfinite(np.concatenate(rings)).all() for rings in polygons
    ):
        problems.append(f"{where}: empty polygon (no coordinates)")
        return None
    for rings in polygons:
        for ring in rings:
            if ring_self_intersects(ring):
                problems.append(
                    f"{where}: self-intersecting polygon near x {ring[0, 0]:.0f}, y "
                    f"{ring[0, 1]:.0f}"
                )
                return None
            if ring_area(ring) == 0.0:
                problems.append(f"{where}: empty polygon (fewer than 3 vertices or zero area)")
                return None
    return polygons


def ring_area(ring: np.ndarray) -> float:
    """Absolute shoelace area of a ring ``float (N, 2)`` (closed or not); 0 below 3 vertices."""
    if len(ring) < 3:
        return 0.0
    x, y = ring[:, 0], ring[:, 1]
    return abs(0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def ring_self_intersects(ring: np.ndarray, block: int = 512) -> bool:
    """Whether two non-adjacent edges of a ring ``float (N, 2)`` cross properly.

    Touching at a vertex or overlapping collinearly does not count (QuPath and skimage fill
    those fine); a figure eight or a bow tie does.
    """
    pts = np.asarray(ring, np.float64)
    if len(pts) and not np.array_equal(pts[0], pts[-1]):
        pts = np.vstack([pts, pts[:1]])
    keep = np.r_[True, np.any(np.diff(pts, axis=0) != 0, axis=1)]
    pts = pts[keep]
    a, b = pts[:-1], pts[1:]
    m = len(a)
    if m < 4:
        return False
    j = np.arange(m)
    for start in range(0, m, block):
        i = np.arange(start, min(m, start + block))[:, None]
        ai, bi = a[i[:, 0]][:, None], b[i[:, 0]][:, None]
        aj, bj = a[None], b[None]
        d1 = _cross(ai, bi, aj)
        d2 = _cross(ai, bi, bj)
        d3 = _cross(aj, bj, ai)
        d4 = _cross(aj, bj, bi)
        proper = (d1 * d2 < 0) & (d3 * d4 < 0)
        adjacent = (np.abs(i - j) <= 1) | ((i == 0) & (j == m - 1)) | ((i == m - 1) & (j == 0))
        if np.any(proper & ~adjacent):
            return True
    return False


def _cross(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """z of (q - p) x (r - p), broadcast over leading axes; points are (..., 2)."""
    return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (
        r[..., 0] - p[..., 0]
    )
