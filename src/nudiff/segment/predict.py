"""Tiled inference and post-processing.

``predict_instances`` runs the network over an image of any size in overlapping tiles
(``monai.inferers.SlidingWindowInferer``, Gaussian or constant blending of the nuclear
probability and the h/v maps), then decodes ``[P(nucleus), h, v]`` into instances with
:func:`nudiff.structure.decode` (marker-controlled watershed). Deterministic: same model and
image give the same output, bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from nudiff.data.formats import write_geojson
from nudiff.data.io import IMAGE_SUFFIXES, read_image, write_image, write_instance_map
from nudiff.model_folder import WEIGHTS_FILE, read_model_folder
from nudiff.pictures import overlay
from nudiff.segment.config import SegmentConfig
from nudiff.segment.model import HV, NP, build_segmenter, image_to_tensor
from nudiff.structure import DecodeParams, decode, dihedral, dihedral_image
from nudiff.utils import DataError, autocast, default_device, progress_bar


def model_dir(run_dir: str | os.PathLike) -> Path:
    """``run_dir/model`` when it exists, else ``run_dir`` itself (a model folder)."""
    run_dir = Path(run_dir)
    return run_dir / "model" if (run_dir / "model" / WEIGHTS_FILE).exists() else run_dir


def load_segmenter(
    run_dir: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[torch.nn.Module, SegmentConfig]:
    """A trained segmenter (eval mode) and its config from a run folder (or its ``model/``, a
    :mod:`nudiff.model_folder` of kind ``segmenter``), on ``device`` (default: the GPU when
    there is one). Another folder is a one-line :class:`DataError` naming it."""
    folder = read_model_folder(model_dir(run_dir), SegmentConfig, ("segmenter",))
    cfg = folder.config
    model = build_segmenter(cfg)
    try:
        model.load_state_dict(folder.weights)
    except RuntimeError as e:
        raise DataError(
            folder.path, f"the weights do not fit the config ({str(e).splitlines()[0]})"
        ) from None
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(device or default_device()).eval(), cfg


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Mirror-pad (bottom, right) an (H, W, 3) image so that both sides are >= ``size``."""
    h, w = image.shape[:2]
    pad = ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0))
    if pad[0][1] or pad[1][1]:
        image = np.pad(image, pad, mode="reflect" if min(h, w) > 1 else "edge")
    return image


#: test-time augmentation: the first ``tta`` of these (quarter turns, left-right flip)
TTA_TRANSFORMS = (
    (0, False),
    (0, True),
    (2, False),
    (2, True),
    (1, False),
    (1, True),
    (3, False),
    (3, True),
)


@torch.no_grad()
def predict_structure(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: int = 256,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 8,
    precision: str = "no",
    tta: int = 1,
) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W): [P(nucleus) in [0, 1], h, v] blended over tiles.

    Images smaller than ``tile`` are mirror-padded; larger ones need no side divisible by
    anything (every window is ``tile`` px, a multiple of the network's down-sampling).
    ``tta`` > 1 averages the predictions of that many flipped / rotated copies of the image
    (:data:`TTA_TRANSFORMS`: 2 = + left-right flip, 4 = + the two 180-degree turns, 8 = the
    whole dihedral group), each mapped back equivariantly (:func:`nudiff.structure.dihedral`).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if not 1 <= tta <= len(TTA_TRANSFORMS):
        raise ValueError(f"tta must be 1..{len(TTA_TRANSFORMS)}, got {tta}")
    device = next(model.parameters()).device
    channels_last = next(model.parameters()).is_contiguous(memory_format=torch.channels_last)

    def network(batch: torch.Tensor) -> torch.Tensor:
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = model(batch)
        prob = torch.softmax(out[NP].float(), dim=1)[:, 1:2]
        return torch.cat([prob, out[HV].float()], dim=1).contiguous()

    inferer = SlidingWindowInferer(
        roi_size=(tile, tile),
        sw_batch_size=batch_size,
        overlap=overlap,
        mode=blend,
        progress=False,
    )

    def tiled(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        out = inferer(image_to_tensor(_pad_to(img, tile), device), network)
        return out[0, :, :h, :w].float().cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        total = None
        for k, flip in TTA_TRANSFORMS[:tta]:
            s = tiled(dihedral_image(image, k, flip, channel_axis=-1))
            s = dihedral(dihedral(s, (4 - k) % 4), 0, flip)  # undo: turn back, then flip
            total = s if total is None else total + s
    finally:
        model.train(was_training)
    return (total / tta).astype(np.float32)


def predict_instances(
    model: torch.nn.Module,
    image: np.ndarray,
    tile: int = 256,
    overlap: float = 0.5,
    post: DecodeParams | None = None,
    blend: str = "gaussian",
    batch_size: int = 8,
    precision: str = "no",
    tta: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W, 3) -> (instance map int32 (H, W), structure float32 (3, H, W)).

    The structure is [P(nucleus), h, v] (see :func:`predict_structure`); the instance map is
    its :func:`nudiff.structure.decode` with ``post`` (default ``DecodeParams()``).
    """
    structure = predict_structure(model, image, tile, overlap, blend, batch_size, precision, tta)
    return decode(structure, post), structure


def structure_with_config(
    model: torch.nn.Module, cfg: SegmentConfig, image: np.ndarray
) -> np.ndarray:
    """:func:`predict_structure` with the tiling and test-time augmentation of ``cfg.infer``."""
    i = cfg.infer
    return predict_structure(
        model, image, i.tile, i.overlap, i.blend, i.batch_size, i.precision, i.tta
    )


def predict_with_config(
    model: torch.nn.Module, cfg: SegmentConfig, image: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_instances` with the tiling and post-processing of ``cfg``."""
    structure = structure_with_config(model, cfg, image)
    return decode(structure, cfg.post), structure


def list_images(images_dir: str | os.PathLike) -> list[Path]:
    """Image files of a folder (sorted; hidden files ignored)."""
    folder = Path(images_dir)
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def predict_folder(
    run_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    progress: bool = True,
    device: str | torch.device | None = None,
    tta: int | None = None,
) -> list[Path]:
    """Segment every image of ``images_dir`` with the model of ``run_dir``.

    Writes ``out_dir/<name>.png`` (16-bit instance map; a 32-bit ``.tif`` past 65,535
    nuclei), ``out_dir/overlays/<name>.png`` (contours on the image) and
    ``out_dir/geojson/<name>.geojson`` (QuPath detections). Returns the instance-map paths.
    A file that is not a readable RGB image raises ``DataError`` naming it. ``tta``
    overrides the model's ``infer.tta`` (test-time augmentation, 1-8).
    """
    model, cfg = load_segmenter(run_dir, device)
    if tta is not None:
        cfg.infer.tta = tta
    paths = list_images(images_dir)
    if not paths:
        raise DataError(images_dir, "no images found (.png, .tif, .jpg)")
    out = Path(out_dir)
    written = []
    for path in progress_bar(paths, desc="segment", unit="img", disable=not progress):
        try:
            image = read_image(path)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - any reader failure is the file's problem
            raise DataError(path, f"cannot read image ({type(e).__name__}: {e})") from None
        inst, _ = predict_with_config(model, cfg, image)
        written.append(write_instance_map(out / f"{path.stem}.png", inst))
        write_image(out / "overlays" / f"{path.stem}.png", overlay(image, inst))
        write_geojson(out / "geojson" / f"{path.stem}.geojson", inst)
    return written
