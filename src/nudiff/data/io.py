"""The one image I/O module: RGB images and instance maps, read strictly, written atomically.

Readers return arrays in one convention whatever the file format:

- images: ``uint8 (H, W, 3)`` RGB in [0, 255];
- instance maps: ``int32 (H, W)``, 0 = background, 1..N (any positive ids) = nuclei.

Anything else (grayscale photo, colour label mask, float labels with fractions, negative ids,
an empty, truncated or corrupt file) raises ``DataError`` whose one-line message names the file.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from nudiff.utils import DataError, atomic_path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".mat")
TIFF_SUFFIXES = (".tif", ".tiff")
INT32_MAX = np.iinfo(np.int32).max


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")


def _read_raster(path: Path, palette_as_index: bool = False) -> tuple[np.ndarray, str]:
    """Decode a PNG/JPEG/TIFF into (array, colour mode). TIFF mode is ``"tiff"``.

    Palette images are expanded to RGB(A), or kept as their indices if ``palette_as_index``.
    """
    _check_file(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return tifffile.imread(path), "tiff"
        with Image.open(path) as im:
            im.load()
            if im.mode == "P" and not palette_as_index:
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            return np.asarray(im), im.mode
    except (UnidentifiedImageError, tifffile.TiffFileError) as e:
        raise DataError(path, f"not a readable image ({type(e).__name__})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(path, f"corrupt or truncated image ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB image (PNG, TIFF, JPEG) as ``uint8 (H, W, 3)``.

    RGBA drops its alpha channel; palette images are expanded to RGB. Grayscale, 16-bit,
    CMYK or any other non-RGB image raises ``DataError``.
    """
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(path, f"unsupported image type {path.suffix!r}; use {IMAGE_SUFFIXES}")
    arr, mode = _read_raster(path)
    if mode == "tiff" and arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] > 4:
        arr = np.moveaxis(arr, 0, -1)  # planar (separate) TIFF: (C, H, W) -> (H, W, C)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise DataError(path, f"not an RGB image (mode {mode}, shape {arr.shape})")
    if arr.dtype != np.uint8:
        raise DataError(path, f"expected 8-bit RGB, got {arr.dtype}")
    return np.ascontiguousarray(arr[..., :3])


def read_instance_map(path: str | os.PathLike) -> np.ndarray:
    """Read an instance map as ``int32 (H, W)``; 0 = background, positive ids = nuclei.

    Formats: PNG (8/16-bit one-channel; a palette PNG gives its indices), TIFF (8/16/32-bit
    integer, or float holding whole numbers), ``.npy`` (no pickles), HoVer-Net/CoNSeP ``.mat``
    (key ``inst_map``). RGB colour masks and other multi-channel images, fractional or negative
    values and ids above 2**31-1 raise ``DataError``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_SUFFIXES:
        raise DataError(path, f"unsupported label type {suffix!r}; use {LABEL_SUFFIXES}")
    if suffix == ".npy":
        arr = _read_npy(path)
    elif suffix == ".mat":
        arr = _read_mat_key(path, "inst_map", required=True)
    else:
        arr, mode = _read_raster(path, palette_as_index=True)
        if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
            raise DataError(
                path, f"{arr.shape[-1]}-channel ({mode}) label image; expected one channel of ids"
            )
    return _as_instance_map(path, arr)


def read_type_map(path: str | os.PathLike) -> np.ndarray | None:
    """Nucleus type map ``int32 (H, W)`` from a HoVer-Net ``.mat`` (key ``type_map``).

    Returns ``None`` when the file carries no type map (any non-``.mat`` file, or a ``.mat``
    without that key).
    """
    path = Path(path)
    if path.suffix.lower() != ".mat":
        return None
    arr = _read_mat_key(path, "type_map", required=False)
    return None if arr is None else _as_instance_map(path, arr)


def _read_npy(path: Path) -> np.ndarray:
    _check_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:  # pickled object arrays and bad headers both land here
        raise DataError(path, f"not a plain numeric .npy array ({_first_line(e)})") from None
    except (OSError, EOFError) as e:
        raise DataError(path, f"corrupt or truncated .npy file ({_first_line(e)})") from None


def _read_mat_key(path: Path, key: str, required: bool) -> np.ndarray | None:
    import scipy.io
    from scipy.io.matlab import MatReadError

    _check_file(path)
    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError:
        raise DataError(path, "MATLAB v7.3 (HDF5) file; re-save it with -v7") from None
    except (
        MatReadError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        OSError,
        EOFError,
        zlib.error,
    ) as e:
        raise DataError(path, f"corrupt or unreadable .mat file ({_first_line(e)})") from None
    if key not in data:
        if not required:
            return None
        keys = sorted(k for k in data if not k.startswith("__"))
        raise DataError(path, f"no {key!r} in .mat file (keys: {keys})")
    return np.asarray(data[key])


def _as_instance_map(path: Path, arr: np.ndarray) -> np.ndarray:
    """Validate a decoded label array and return it as int32 (H, W)."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape([s for s in arr.shape if s != 1] or [1, 1])
    if arr.ndim != 2:
        raise DataError(path, f"label must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise DataError(path, "label contains NaN or infinite values")
        if np.any(arr != np.round(arr)):
            raise DataError(path, "label has non-integer values; expected whole-number ids")
    elif arr.dtype.kind not in "iu":
        raise DataError(path, f"label dtype {arr.dtype} is not numeric")
    if arr.size and arr.min() < 0:
        raise DataError(path, f"label has negative ids (min {arr.min()})")
    if arr.size and arr.max() > INT32_MAX:
        raise DataError(path, f"label id {arr.max()} exceeds the int32 range")
    return arr.astype(np.int32)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write ``uint8 (H, W, 3)`` RGB to PNG or TIFF (chosen by suffix), atomically."""
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".png":
            Image.fromarray(image).save(tmp, format="PNG")
        elif suffix in TIFF_SUFFIXES:
            tifffile.imwrite(tmp, image, photometric="rgb", compression="zlib")
        else:
            raise ValueError(f"{path}: write_image supports .png and .tif, not {suffix!r}")
    return path


def write_instance_map(path: str | os.PathLike, instance_map: np.ndarray) -> Path:
    """Write an instance map ``(H, W)`` of non-negative integers; return the path written.

    ``.png`` -> 16-bit grayscale PNG. If the largest id exceeds 65535 (PNG's limit) a 32-bit
    TIFF is written instead, next to the requested name with suffix ``.tif``; the returned
    path says which. ``.tif``/``.tiff`` -> uint16 or uint32 TIFF. ``.npy`` -> int32 array.
    """
    path = Path(path)
    inst = np.asarray(instance_map)
    if inst.ndim != 2 or inst.dtype.kind not in "iub":
        raise ValueError(f"instance map must be integer (H, W), got {inst.dtype} {inst.shape}")
    top = int(inst.max()) if inst.size else 0
    if inst.size and inst.min() < 0:
        raise ValueError("instance map has negative ids")
    if top > INT32_MAX:
        raise ValueError(f"instance id {top} exceeds the int32 range")
    suffix = path.suffix.lower()
    if suffix not in (".png", ".npy") + TIFF_SUFFIXES:
        raise ValueError(f"{path}: write_instance_map supports .png, .tif and .npy")
    if suffix == ".png" and top > 65535:
        path, suffix = path.with_suffix(".tif"), ".tif"
    with atomic_path(path) as tmp:
        if suffix == ".png":
            Image.fromarray(inst.astype(np.uint16)).save(tmp, format="PNG")
        elif suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, inst.astype(np.int32))
        else:
            dtype = np.uint16 if top <= 65535 else np.uint32
            tifffile.imwrite(tmp, inst.astype(dtype), compression="zlib")
    return path
