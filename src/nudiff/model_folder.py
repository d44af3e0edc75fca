"""One folder format for every trained model (diffusion models and segmenters), as diffusers'
``save_pretrained`` / ``from_pretrained``: the folder, not the run that made it, is what ships.

A model folder holds::

    model.safetensors   the weights (the EMA weights of a diffusion model)
    config.yaml         format_version: 1
                        kind: structure | image | segmenter
                        config: {...}     the stage's config that built the network
                        info: {...}       how it was made (step, validation scores, ...); optional

:func:`save_model_folder` writes one atomically (the folder is replaced as a whole);
:func:`read_model_folder` reads it, and folders of earlier versions too: diffusion models with
``config.json`` (the config alone), segmenters with a bare config in ``config.yaml`` and
``info.json``. :func:`nudiff.models.upgrade_model_folder` rewrites such a folder in the current
format (``python -m nudiff.models upgrade FOLDER ...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nudiff.checkpoint import state_dict_cpu
from nudiff.config import from_dict, load_yaml, to_dict
from nudiff.utils import DataError, atomic_folder, read_json, write_text

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
# model folders before format_version 1, read until nudiff.config.REMOVED_IN
# (`python -m nudiff.models upgrade FOLDER` rewrites one):
LEGACY_CONFIG_JSON = "config.json"  # diffusion models before format_version 1
LEGACY_INFO_JSON = "info.json"  # segmenters before format_version 1
DIFFUSION_KINDS = ("structure", "image")
KINDS = (*DIFFUSION_KINDS, "segmenter")
_NAMES = {
    "structure": "a structure diffusion model",
    "image": "an image diffusion model",
    "segmenter": "a segmenter",
}


@dataclass
class ModelFolder:
    """What a model folder holds: ``weights`` (name -> tensor), the ``config`` dataclass,
    ``kind``, ``info`` and the ``format_version`` it was written in (0: before versions)."""

    path: Path
    kind: str
    config: Any
    weights: dict[str, torch.Tensor]
    info: dict[str, Any]
    format_version: int


def save_model_folder(
    folder: str | os.PathLike,
    model: torch.nn.Module | dict[str, torch.Tensor],
    config: Any,
    kind: str,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (a module or its state dict) and ``config`` (the dataclass that builds
    it) as a model folder of ``kind``, replacing ``folder`` atomically."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    weights = state_dict_cpu(model) if isinstance(model, torch.nn.Module) else model
    header: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": to_dict(config),
    }
    if info:
        header["info"] = info
    with atomic_folder(folder) as tmp:
        save_file(weights, str(tmp / WEIGHTS_FILE))
        write_text(tmp / CONFIG_FILE, yaml.safe_dump(_plain(header), sort_keys=False))
    return Path(folder)


def read_model_folder(
    folder: str | os.PathLike, config_cls: type, kinds: tuple[str, ...], weights: bool = True
) -> ModelFolder:
    """Read a model folder (any version) whose kind is one of ``kinds`` into ``config_cls``.

    A missing file, a folder of another kind (an image model where a structure model is
    expected, a segmenter where a diffusion model is), or a ``format_version`` newer than this
    code raises a one-line :class:`DataError` naming the folder. ``weights=False``: the config
    alone (``weights`` is then empty).
    """
    folder = Path(folder)
    wanted = " or ".join(_NAMES[k] for k in kinds)
    if not folder.is_dir():
        raise DataError(folder, f"not found: expected a folder holding {wanted}")
    header = read_header(folder, wanted)
    version = header.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise DataError(
            folder / CONFIG_FILE,
            f"unknown model folder format_version {version!r} (this nudiff "
            f"reads 1 to {FORMAT_VERSION}; a newer nudiff wrote it?)",
        )
    kind = header.get("kind")
    if kind not in kinds:
        what = _NAMES.get(kind, f"a model of kind {kind!r}")
        raise DataError(folder, f"holds {what}, not {wanted}")
    config = from_dict(config_cls, header.get("config"), str(folder / CONFIG_FILE))
    tensors: dict[str, torch.Tensor] = {}
    if weights:
        path = folder / WEIGHTS_FILE
        if not path.is_file():
            raise DataError(
                folder,
                f"no {WEIGHTS_FILE} here (not a trained model folder, or an unfinished one)",
            )
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise DataError(path, f"cannot read the weights ({e})") from None
    return ModelFolder(
        folder, kind, config, tensors, header.get("info") or {}, header["_read_version"]
    )


def read_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``info`` of a model folder of any kind and version (``{}`` when it has none)."""
    return read_header(Path(folder), "a model").get("info") or {}


def read_header(folder: Path, wanted: str) -> dict[str, Any]:
    """The folder's ``config.yaml`` header, an earlier version's files mapped onto it
    (``_read_version``: the version read, 0 for a folder from before versions)."""
    if (folder / CONFIG_FILE).is_file():
        data = load_yaml(folder / CONFIG_FILE)
        if "format_version" in data:
            return data | {"_read_version": data["format_version"]}
        # before format_version 1: a segmenter's bare SegmentConfig (+ info.json), or a
        # diffusion run folder's config.yaml (its model is in model/)
        kind = _diffusion_kind(data) if _is_diffusion_config(data) else "segmenter"
        info = (
            read_json(folder / LEGACY_INFO_JSON) if (folder / LEGACY_INFO_JSON).is_file() else {}
        )
        return {
            "format_version": 1,
            "kind": kind,
            "config": data,
            "info": info,
            "_read_version": 0,
        }
    if (folder / LEGACY_CONFIG_JSON).is_file():  # a diffusion model before format_version 1
        data = read_json(folder / LEGACY_CONFIG_JSON)
        if not isinstance(data, dict):
            raise DataError(folder / LEGACY_CONFIG_JSON, "not a JSON object")
        return {
            "format_version": 1,
            "kind": _diffusion_kind(data),
            "config": data,
            "_read_version": 0,
        }
    missing = (
        CONFIG_FILE if (folder / WEIGHTS_FILE).is_file() else f"{WEIGHTS_FILE} nor {CONFIG_FILE}"
    )
    raise DataError(folder, f"no {missing} here: not a model folder (expected {wanted})")


def _is_diffusion_config(data: dict) -> bool:
    return bool({"data", "sample", "num_train_timesteps", "prediction_type"} & set(data))


def _diffusion_kind(data: dict) -> str:
    model = data.get("model")
    return model.get("kind", "structure") if isinstance(model, dict) else "structure"


def _plain(obj: Any) -> Any:
    """Tuples -> lists, numpy scalars -> numbers, so that ``yaml.safe_dump`` writes plain YAML."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
