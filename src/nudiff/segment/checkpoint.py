"""The exported segmenter ``out/model/``: ``model.safetensors`` + ``config.yaml`` + ``info.json``,
replaced as a whole. Training checkpoints are :mod:`nudiff.checkpoint`'s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nudiff.checkpoint import state_dict_cpu
from nudiff.utils import atomic_folder, write_json


def save_model(
    folder: str | os.PathLike, model: torch.nn.Module, config_writer, info: dict[str, Any]
) -> Path:
    """Export ``model.safetensors`` + ``config.yaml`` (via ``config_writer(path)``) + ``info.json``
    into ``folder`` atomically (the folder is replaced as a whole)."""
    with atomic_folder(folder) as tmp:
        save_file(state_dict_cpu(model), str(tmp / "model.safetensors"))
        config_writer(tmp / "config.yaml")
        write_json(tmp / "info.json", info)
    return Path(folder)
