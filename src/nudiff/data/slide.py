"""Whole-slide images: read regions of SVS / NDPI / pyramidal or tiled TIFF, tissue masks.

Reading goes through ``tiffslide`` (tifffile + zarr, pure Python; an openslide-python
drop-in): only the tiles a region touches are decoded, so a slide never has to fit in memory.

Coordinates: a :class:`SlideView` works in the pixels of one *working resolution*: a pyramid
level, optionally resized to a target µm/px. ``scale`` is the size of one working pixel in
level-0 (full-resolution) pixels; QuPath and GeoJSON coordinates are level-0 pixels, with
pixel ``(row, col)`` covering ``[col, col + 1) x [row, row + 1)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import rgb2gray
from skimage.filters import threshold_otsu

from nudiff.utils import DataError, atomic_path

SLIDE_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".scn", ".bif", ".qptiff")
#: brightest class of an Otsu split darker than this (0..1 grey) => no glass: all tissue
GLASS_GREY = 0.8


@dataclass
class SlideView:
    """An open slide read at one working resolution (see the module docstring).

    ``level``: the pyramid level read; ``resize``: working px per level px (1 = none);
    ``scale``: level-0 px per working px; ``size``: ``(width, height)`` in working px;
    ``mpp``: µm per working px, or ``None`` when the slide does not say.
    """

    path: Path
    slide: object
    level: int
    resize: float
    scale: float
    size: tuple[int, int]
    mpp: float | None

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The working-resolution region ``[x, x + w) x [y, y + h)``: uint8 (h, w, 3) RGB.

        The region must lie inside the slide (``DataError`` otherwise).
        """
        width, height = self.size
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise DataError(
                self.path,
                f"region x={x} y={y} w={w} h={h} is outside the slide ({width} x {height})",
            )
        if self.resize == 1.0:
            return self._read_level(x, y, w, h)
        # the level region that covers the working region, read then resized to (w, h)
        lw, lh = self.slide.level_dimensions[self.level]
        lx0, ly0 = math.floor(x / self.resize), math.floor(y / self.resize)
        lx1 = min(lw, math.ceil((x + w) / self.resize))
        ly1 = min(lh, math.ceil((y + h) / self.resize))
        patch = self._read_level(lx0, ly0, lx1 - lx0, ly1 - ly0)
        return np.asarray(Image.fromarray(patch).resize((w, h), Image.Resampling.BILINEAR))

    def _read_level(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        down = self.slide.level_downsamples[self.level]
        try:
            # tiffslide maps level-0 locations to the level with int(loc / down): ceil keeps
            # that exactly (x, y) for any downsample >= 1
            loc = (math.ceil(x * down), math.ceil(y * down))
            arr = self.slide.read_region(loc, self.level, (w, h), as_array=True)
        except Exception as e:  # noqa: BLE001 - any decoder failure is the file's problem
            raise DataError(self.path, f"cannot read region ({type(e).__name__}: {e})") from None
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=-1)
        if arr.dtype != np.uint8 or arr.shape[-1] not in (3, 4):
            raise DataError(self.path, f"not an 8-bit RGB slide ({arr.dtype}, {arr.shape[-1]} ch)")
        return np.ascontiguousarray(arr[..., :3])

    def thumbnail(self, max_side: int = 2048, strip: int = 512) -> tuple[np.ndarray, float]:
        """The whole slide, downsized so that its longer side is <= ``max_side``.

        Returns ``(uint8 (h, w, 3), t)`` with ``t`` thumbnail px per working px. Read from the
        smallest pyramid level in strips of ``strip`` rows, so memory stays bounded even for a
        slide without a pyramid.
        """
        width, height = self.size
        t = min(1.0, max_side / max(width, height))
        tw, th = max(1, round(width * t)), max(1, round(height * t))
        level = self.slide.level_count - 1
        lw, lh = self.slide.level_dimensions[level]
        down = self.slide.level_downsamples[level]
        out = np.empty((th, tw, 3), np.uint8)
        for y0 in range(0, lh, strip):
            y1 = min(lh, y0 + strip)
            r0, r1 = math.floor(y0 * th / lh), math.floor(y1 * th / lh)
            if y1 == lh:
                r1 = th
            if r1 <= r0:
                continue
            try:
                loc = (0, math.ceil(y0 * down))
                arr = self.slide.read_region(loc, level, (lw, y1 - y0), as_array=True)
            except Exception as e:  # noqa: BLE001
                raise DataError(self.path, f"cannot read ({type(e).__name__}: {e})") from None
            arr = np.asarray(arr)
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=-1)
            im = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
            out[r0:r1] = np.asarray(im.resize((tw, r1 - r0), Image.Resampling.BOX))
        return out, t

    def close(self) -> None:
        self.slide.close()

    def __enter__(self) -> SlideView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_slide(
    path: str | os.PathLike, level: int | None = None, mpp: float | None = None
) -> SlideView:
    """Open a slide at pyramid ``level`` (default 0) or at a target ``mpp`` (µm per pixel).

    With ``mpp`` the finest level no coarser than the target is read and resized to it;
    it needs the slide's own µm/px (``DataError`` if the file does not record it). Any
    unreadable or missing file raises ``DataError`` naming it.
    """
    import tiffslide

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "slide not found")
    try:
        slide = tiffslide.TiffSlide(path)
        _ = slide.level_dimensions
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for bad files
        raise DataError(path, f"not a readable slide ({type(e).__name__}: {e})") from None
    base_mpp = _base_mpp(slide)
    if level is not None and mpp is not None:
        raise DataError(path, "give a level or a target µm/px (--mpp), not both")
    if mpp is not None:
        if mpp <= 0:
            raise DataError(path, f"target µm/px must be positive, got {mpp}")
        if base_mpp is None:
            raise DataError(path, "the slide records no µm/px: choose a --level instead of --mpp")
        wanted = mpp / base_mpp  # target downsample relative to level 0
        level = max(
            (i for i, d in enumerate(slide.level_downsamples) if d <= wanted * 1.001), default=0
        )
        resize = slide.level_downsamples[level] / wanted
        if abs(resize - 1.0) < 1e-3:
            resize = 1.0
    else:
        level = 0 if level is None else level
        if not 0 <= level < slide.level_count:
            raise DataError(
                path, f"level {level} does not exist (levels 0..{slide.level_count - 1})"
            )
        resize = 1.0
    down = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    size = (max(1, round(lw * resize)), max(1, round(lh * resize)))
    scale = down / resize
    return SlideView(
        path, slide, level, resize, scale, size, None if base_mpp is None else base_mpp * scale
    )


def _base_mpp(slide: object) -> float | None:
    props = slide.properties
    for key in ("tiffslide.mpp-x", "openslide.mpp-x"):
        try:
            value = float(props.get(key))
        except (TypeError, ValueError):
            continue
        if value > 0 and math.isfinite(value):
            return value
    return None


def tissue_mask(thumbnail: np.ndarray, min_size: int = 16, dilate: int = 2) -> np.ndarray:
    """Tissue on a slide thumbnail: uint8 (h, w, 3) RGB -> bool (h, w).

    Otsu's threshold on grey levels separates dark tissue from bright glass. When the image
    has no glass (the brighter Otsu class is darker than :data:`GLASS_GREY`, as on a crop of
    tissue) everything is tissue. Specks under ``min_size`` px are dropped and the mask is
    dilated by ``dilate`` px so that nuclei at the tissue edge stay inside.
    """
    grey = rgb2gray(np.asarray(thumbnail)[..., :3])
    if grey.max() - grey.min() < 1e-3:
        return np.full(grey.shape, grey.mean() < GLASS_GREY)
    t = threshold_otsu(grey)
    if grey[grey > t].mean() < GLASS_GREY:
        return np.ones(grey.shape, bool)
    mask = grey <= t
    labels, n = ndi.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        mask = (sizes >= min_size)[labels] & mask
    if dilate:
        mask = ndi.binary_dilation(mask, iterations=dilate)
    return mask


def write_pyramid(
    path: str | os.PathLike,
    image: np.ndarray,
    mpp: float | None = None,
    levels: int = 3,
    tile: int = 256,
) -> Path:
    """Write uint8 (H, W, 3) as a tiled pyramidal TIFF (levels /1, /2, /4, ... as SubIFDs),
    the generic layout every slide reader opens; ``mpp`` is stored as the TIFF resolution.
    Atomic. The image must fit in memory (meant for tests, benchmarks and small mosaics).
    """
    import tifffile

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    opts: dict = {"tile": (tile, tile), "photometric": "rgb", "compression": "zlib"}
    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=image.nbytes > 2**31) as tif:
        for k in range(levels):
            down = 2**k
            level = image if k == 0 else _downsample(image, down)
            res = {}
            if mpp:
                px_per_cm = 1e4 / (mpp * down)
                res = {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}
            extra = {"subifds": levels - 1} if k == 0 else {"subfiletype": 1}
            tif.write(level, **opts, **res, **extra)
    return path


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, w // factor), max(1, h // factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
