"""Whole-slide prediction: tissue mask, tiles streamed with a margin, instances stitched.

The region (the whole slide, or ``--roi``) is cut into square *core* tiles. Each core is
predicted with a ``margin`` of context on every side (clipped to the region) by the ordinary
per-image predictor (:func:`nudiff.segment.predict.predict_with_config`). A nucleus is kept by the
one tile whose core holds its centroid, so a nucleus on a tile border is neither cut in two nor
counted twice (it lies whole inside that tile's window as long as it reaches less than ``margin``
px out of the core). Two tiles that predict a border nucleus a little differently can both place
its centroid in their own core: a nucleus lying for half its area or more on one an earlier
neighbour kept is dropped (:func:`drop_claimed`). Window origins sit on the sliding-window
inferer's stride, so that inside the core the network sees the same 256-px windows as it would on
the region as one image.

Each finished tile is saved (``OUT/tiles/r<row>_c<col>.npz``: its kept nuclei as a label
crop, their QuPath features, a low-resolution overlay patch); a rerun skips saved tiles.
Only one window is in memory at a time. Outputs: ``OUT/<slide>.geojson`` (detections with
measurements), ``OUT/<slide>_overlay.png`` and ``OUT/wsi.json`` (settings and summary).
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.measure import regionprops

from nudiff.config import differences, from_dict
from nudiff.data.formats import nucleus_feature
from nudiff.data.io import write_image
from nudiff.data.slide import SlideView, open_slide, tissue_mask
from nudiff.pictures import overlay
from nudiff.segment.predict import load_segmenter, predict_with_config
from nudiff.structure import relabel
from nudiff.utils import DataError, atomic_path, progress_bar, read_json, write_json

MANIFEST = "wsi.json"
_UUID_NAMESPACE = uuid.UUID("0b6f3c1e-7a51-4f7e-9d36-2f4c1c9a8e55")


@dataclass(frozen=True)
class Tile:
    """A core ``(x, y, w, h)`` and its window (core + margin, clipped), working pixels."""

    row: int
    col: int
    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"r{self.row:04d}_c{self.col:04d}"


def tile_grid(region: tuple[int, int, int, int], tile: int, margin: int) -> list[Tile]:
    """Cores of ``tile`` px covering ``region`` (x, y, w, h) row by row, windows = cores
    grown by ``margin`` on each side and clipped to the region."""
    x0, y0, w, h = region
    tiles = []
    for row, ty in enumerate(range(y0, y0 + h, tile)):
        for col, tx in enumerate(range(x0, x0 + w, tile)):
            cw, ch = min(tile, x0 + w - tx), min(tile, y0 + h - ty)
            wx0, wy0 = max(x0, tx - margin), max(y0, ty - margin)
            wx1, wy1 = min(x0 + w, tx + cw + margin), min(y0 + h, ty + ch + margin)
            tiles.append(Tile(row, col, (tx, ty, cw, ch), (wx0, wy0, wx1 - wx0, wy1 - wy0)))
    return tiles


def keep_core_instances(instance_map: np.ndarray, core: tuple[int, int, int, int]) -> np.ndarray:
    """The nuclei of a window whose centroid lies in the core; int32 (h, w), ids 1..k.

    ``instance_map`` int (h, w) is the window's prediction; ``core`` ``(x, y, w, h)`` is in
    window pixels. Centroids on the core's right / bottom edge belong to the next tile
    (half-open intervals), so each nucleus of the slide is kept by exactly one tile.
    """
    inst = np.asarray(instance_map)
    ids = np.unique(inst)
    ids = ids[ids > 0]
    if not ids.size:
        return np.zeros(inst.shape, np.int32)
    cy, cx = np.asarray(ndi.center_of_mass(np.ones_like(inst), inst, ids)).reshape(-1, 2).T
    x, y, w, h = core
    keep = ids[(cx >= x - 0.5) & (cx < x + w - 0.5) & (cy >= y - 0.5) & (cy < y + h - 0.5)]
    return relabel(np.where(np.isin(inst, keep), inst, 0))


def drop_claimed(
    kept: np.ndarray,
    window: tuple[int, int, int, int],
    claimed: list[tuple[np.ndarray, tuple[int, int, int, int]]],
    min_overlap: float = 0.5,
) -> np.ndarray:
    """``kept`` (a tile's nuclei, ids 1..k, in ``window`` = x, y, w, h) without those that lie
    for ``min_overlap`` or more of their area on nuclei already kept by earlier tiles
    (``claimed``: their label crops and windows). Two tiles that predict one border nucleus a
    little differently can each put its centroid in their own core; the first keeps it."""
    x, y, w, h = window
    taken = np.zeros(kept.shape, bool)
    for labels, (cx, cy, cw, ch) in claimed:
        x0, y0, x1, y1 = max(x, cx), max(y, cy), min(x + w, cx + cw), min(y + h, cy + ch)
        if x0 < x1 and y0 < y1:
            taken[y0 - y : y1 - y, x0 - x : x1 - x] |= (
                labels[y0 - cy : y1 - cy, x0 - cx : x1 - cx] > 0
            )
    n = int(kept.max(initial=0))
    if not n or not taken.any():
        return kept
    area = np.bincount(kept.ravel(), minlength=n + 1)
    on_taken = np.bincount(kept[taken], minlength=n + 1)
    drop = np.flatnonzero(on_taken >= min_overlap * np.maximum(area, 1))
    drop = drop[drop > 0]
    return relabel(np.where(np.isin(kept, drop), 0, kept)) if drop.size else kept


def nucleus_features(
    kept: np.ndarray,
    origin: tuple[int, int],
    scale: float,
    mpp: float | None,
    name: str,
) -> list[dict]:
    """QuPath detection features of a tile's kept nuclei (int (h, w), ids 1..k).

    ``origin`` is the window's ``(x, y)`` and ``scale`` level-0 px per working px: outlines
    and centroids are written in level-0 pixels, as QuPath expects. Measurements (QuPath's
    measurement list, a ``{name: value}`` object): ``area`` and ``centroid_x / _y`` in level-0
    pixels, ``area_um2`` when the slide's µm/px is known, ``eccentricity`` (of the ellipse with
    the same second moments, 0 = circle).
    """
    features = []
    ox, oy = origin
    for p in regionprops(kept):
        r0, c0, _, _ = p.bbox
        cy, cx = p.centroid
        gx, gy = (ox + cx + 0.5) * scale, (oy + cy + 0.5) * scale
        m = {
            "area": round(float(p.area) * scale * scale, 2),
            "centroid_x": round(gx, 2),
            "centroid_y": round(gy, 2),
            "eccentricity": round(float(p.eccentricity), 4),
        }
        if mpp:
            m["area_um2"] = round(float(p.area) * mpp * mpp, 3)
        fid = str(uuid.uuid5(_UUID_NAMESPACE, f"{name}/{gx:.2f}/{gy:.2f}"))
        features.append(nucleus_feature(p.image, (oy + r0, ox + c0), fid, m, scale=scale))
    return features


@dataclass
class WsiSettings:
    """What a run's tiles depend on; a rerun with other settings refuses the folder."""

    slide: str
    model: str
    level: int
    scale: float
    region: tuple[int, int, int, int]
    tile: int
    margin: int
    tta: int
    tissue: bool


def predict_slide(
    run_dir: str | os.PathLike,
    slide_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    roi: tuple[int, int, int, int] | None = None,
    level: int | None = None,
    mpp: float | None = None,
    tile: int = 1024,
    margin: int = 128,
    tissue: bool = True,
    tta: int | None = None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Segment a slide (or its level-0 ``roi`` = x, y, w, h) with the model of ``run_dir``.

    Returns the summary also written to ``OUT/wsi.json``. ``tile`` and ``margin`` are in
    working pixels (rounded up to the inferer's stride); ``tissue=False`` predicts every tile.
    """
    model, cfg = load_segmenter(run_dir, device)
    if tta is not None:
        cfg.infer.tta = tta
    stride = max(1, int(cfg.infer.tile * (1 - cfg.infer.overlap)))
    tile = math.ceil(tile / stride) * stride
    margin = math.ceil(margin / stride) * stride

    def predict(image: np.ndarray) -> np.ndarray:
        return predict_with_config(model, cfg, image)[0]

    with open_slide(slide_path, level=level, mpp=mpp) as view:
        settings = WsiSettings(
            str(Path(slide_path).resolve()),
            str(Path(run_dir).resolve()),
            view.level,
            view.scale,
            working_region(view, roi),
            tile,
            margin,
            cfg.infer.tta,
            tissue,
        )
        return run_tiles(view, settings, predict, out_dir, progress)


def working_region(
    view: SlideView, roi: tuple[int, int, int, int] | None
) -> tuple[int, int, int, int]:
    """A level-0 ``roi`` (x, y, w, h) in working pixels (the whole slide when ``None``)."""
    width, height = view.size
    if roi is None:
        return 0, 0, width, height
    x, y, w, h = roi
    s = view.scale
    x0, y0 = math.floor(x / s), math.floor(y / s)
    x1, y1 = min(width, math.ceil((x + w) / s)), min(height, math.ceil((y + h) / s))
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x0 >= width or y0 >= height:
        raise DataError(
            view.path,
            f"--roi {x},{y},{w},{h} is outside the slide (level 0: "
            f"{view.slide.level_dimensions[0][0]} x {view.slide.level_dimensions[0][1]})",
        )
    return x0, y0, x1 - x0, y1 - y0


def run_tiles(
    view: SlideView,
    settings: WsiSettings,
    predict: Callable[[np.ndarray], np.ndarray],
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> dict:
    """Predict every tissue tile not yet saved in ``out_dir/tiles``, then merge the outputs.

    ``predict`` maps uint8 (h, w, 3) to an instance map int (h, w) (the segmenter; tests
    pass a stand-in).
    """
    out = Path(out_dir)
    _check_resume(out, settings)
    started = time.perf_counter()
    thumb, t = view.thumbnail()
    mask = tissue_mask(thumb) if settings.tissue else np.ones(thumb.shape[:2], bool)
    tiles = tile_grid(settings.region, settings.tile, settings.margin)
    todo = [k for k in tiles if _has_tissue(mask, t, k.core)]
    tile_dir = out / "tiles"
    pending = [k for k in todo if not (tile_dir / f"{k.name}.npz").exists()]
    grid = {(k.row, k.col): k for k in tiles}
    bar = progress_bar(pending, desc="tiles", unit="tile", disable=not progress)
    for k in bar:
        image = view.read(*k.window)
        x, y, _, _ = k.window
        core = (k.core[0] - x, k.core[1] - y, k.core[2], k.core[3])
        kept = keep_core_instances(predict(image), core)
        kept = drop_claimed(
            kept,
            k.window,
            [
                (load_tile(path)["labels"], k2.window)
                for k2 in _earlier_neighbours(grid, k)
                if (path := tile_dir / f"{k2.name}.npz").exists()
            ],
        )
        feats = nucleus_features(kept, (x, y), view.scale, view.mpp, Path(settings.slide).stem)
        patch = _overlay_patch(image, kept, core, k.core, t)
        _save_tile(tile_dir / f"{k.name}.npz", kept, k, feats, patch)
    seconds = time.perf_counter() - started
    stem = Path(settings.slide).stem
    n = write_slide_geojson(out / f"{stem}.geojson", tile_dir, todo)
    _write_overlay(out / f"{stem}_overlay.png", thumb, t, settings.region, tile_dir, todo)
    mp = sum(k.core[2] * k.core[3] for k in todo) / 1e6
    summary = {
        "settings": asdict(settings),
        "mpp": view.mpp,
        "n_tiles": len(tiles),
        "n_tissue_tiles": len(todo),
        "n_predicted_now": len(pending),
        "n_nuclei": n,
        "tissue_megapixels": round(mp, 3),
        "seconds_this_run": round(seconds, 2),
        "peak_rss_mib": peak_rss_mib(),
    }
    write_json(out / MANIFEST, summary)
    return summary


def _earlier_neighbours(grid: dict[tuple[int, int], Tile], k: Tile) -> list[Tile]:
    """The tiles before ``k`` (row by row) whose cores touch its core (``grid``: tiles by
    (row, col)): the only ones that can hold a nucleus whose centroid ``k`` also places in its
    own core."""
    spots = [
        (k.row, k.col - 1),
        (k.row - 1, k.col - 1),
        (k.row - 1, k.col),
        (k.row - 1, k.col + 1),
    ]
    return [grid[rc] for rc in spots if rc in grid]


def peak_rss_mib() -> float:
    """This process' peak resident memory in MiB: ``VmHWM`` of /proc/self/status (reset by
    exec, unlike ``ru_maxrss``, which a child started by fork + exec inherits), else
    ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _check_resume(out: Path, settings: WsiSettings) -> None:
    """Refuse an ``out`` whose saved tiles come from other settings (field by field:
    :func:`nudiff.config.differences`); record the settings."""
    path = out / MANIFEST
    now = json.loads(json.dumps(asdict(settings)))
    if path.exists():
        try:
            diff = differences(
                from_dict(WsiSettings, read_json(path).get("settings"), str(path)), settings
            )
        except (DataError, TypeError):  # written by a version with other settings
            diff = ["settings"]
        if not diff:
            return
        if any((out / "tiles").glob("*.npz")):
            raise DataError(
                out,
                f"holds tiles of a run with other settings ({', '.join(diff)}); use another --out",
            )
    write_json(path, {"settings": now})


def _has_tissue(mask: np.ndarray, t: float, core: tuple[int, int, int, int]) -> bool:
    x, y, w, h = core
    r0, c0 = max(0, math.floor(y * t) - 1), max(0, math.floor(x * t) - 1)
    r1, c1 = math.ceil((y + h) * t) + 1, math.ceil((x + w) * t) + 1
    return bool(mask[r0:r1, c0:c1].any())


def _overlay_patch(
    image: np.ndarray,
    kept: np.ndarray,
    core: tuple[int, int, int, int],
    core_abs: tuple[int, int, int, int],
    t: float,
) -> np.ndarray:
    """The core with nuclei outlined, downsized to the thumbnail's scale ``t``."""
    x, y, w, h = core
    pic = overlay(image[y : y + h, x : x + w], kept[y : y + h, x : x + w])
    (r0, r1), (c0, c1) = _thumb_span(core_abs, t)
    if (r1 - r0, c1 - c0) == pic.shape[:2]:
        return pic
    size = (max(1, c1 - c0), max(1, r1 - r0))
    return np.asarray(Image.fromarray(pic).resize(size, Image.Resampling.BOX))


def _thumb_span(core: tuple[int, int, int, int], t: float) -> tuple[tuple[int, int], ...]:
    x, y, w, h = core
    return (math.floor(y * t), math.floor((y + h) * t)), (
        math.floor(x * t),
        math.floor((x + w) * t),
    )


def _save_tile(
    path: Path, kept: np.ndarray, k: Tile, feats: list[dict], patch: np.ndarray
) -> None:
    with atomic_path(path) as tmp:
        np.savez_compressed(
            tmp,
            labels=kept.astype(np.uint32 if kept.max(initial=0) > 65535 else np.uint16),
            window=np.asarray(k.window),
            overlay=patch,
            features=np.asarray(json.dumps(feats, separators=(",", ":"))),
        )


def load_tile(path: str | os.PathLike) -> dict:
    """A saved tile: ``labels`` (h, w), ``window`` (x, y, w, h), ``overlay``, ``features``."""
    with np.load(path, allow_pickle=False) as z:
        return {
            "labels": z["labels"].astype(np.int32),
            "window": tuple(int(v) for v in z["window"]),
            "overlay": z["overlay"],
            "features": json.loads(str(z["features"])),
        }


def _iter_features(tile_dir: Path, tiles: list[Tile]) -> Iterator[dict]:
    for k in tiles:
        path = tile_dir / f"{k.name}.npz"
        if path.exists():
            yield from load_tile(path)["features"]


def write_slide_geojson(path: Path, tile_dir: Path, tiles: list[Tile]) -> int:
    """Stream every saved tile's features into one FeatureCollection (atomic); return the
    number of nuclei. ``measurements.instance_id`` numbers them 1..N over the slide."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write('{"type":"FeatureCollection","features":[')
        for feature in _iter_features(tile_dir, tiles):
            n += 1
            feature["properties"]["measurements"]["instance_id"] = n
            f.write(("," if n > 1 else "") + json.dumps(feature, separators=(",", ":")))
        f.write("]}\n")
    return n


def _write_overlay(
    path: Path,
    thumb: np.ndarray,
    t: float,
    region: tuple[int, int, int, int],
    tile_dir: Path,
    tiles: list[Tile],
) -> None:
    """The region's thumbnail with each predicted tile's overlay patch pasted in."""
    canvas = thumb.copy()
    for k in tiles:
        file = tile_dir / f"{k.name}.npz"
        if not file.exists():
            continue
        (r0, r1), (c0, c1) = _thumb_span(k.core, t)
        patch = load_tile(file)["overlay"]
        h, w = (
            min(r1 - r0, patch.shape[0], canvas.shape[0] - r0),
            min(c1 - c0, patch.shape[1], canvas.shape[1] - c0),
        )
        if h > 0 and w > 0:
            canvas[r0 : r0 + h, c0 : c0 + w] = patch[:h, :w]
    (r0, r1), (c0, c1) = _thumb_span(region, t)
    write_image(path, np.ascontiguousarray(canvas[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)]))


def stitch_instance_map(out_dir: str | os.PathLike) -> np.ndarray:
    """The region's instance map int32 (H, W) in working pixels, assembled from saved tiles.

    For regions that fit in memory (tests, benchmarks, an ROI); ids 1..N tile by tile.
    """
    out = Path(out_dir)
    settings = read_json(out / MANIFEST)["settings"]
    x0, y0, w, h = settings["region"]
    inst = np.zeros((h, w), np.int32)
    offset = 0
    for path in sorted((out / "tiles").glob("*.npz")):
        tile = load_tile(path)
        labels, (x, y, tw, th) = tile["labels"], tile["window"]
        view = inst[y - y0 : y - y0 + th, x - x0 : x - x0 + tw]
        view[labels > 0] = labels[labels > 0] + offset
        offset += int(labels.max(initial=0))
    return inst
