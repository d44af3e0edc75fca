"""Segmenter checkpoints and the exported model, on top of :mod:`nudiff.checkpoint`.

Training checkpoints use the shared layout (``out/checkpoints/step_0000500/`` with
``model.safetensors``, ``optimizer.safetensors`` + ``optimizer.json``, ``state.json``;
assembled in a temporary folder and renamed). The exported model ``out/model/`` holds
``model.safetensors`` + ``config.yaml`` + ``info.json`` and is replaced as a whole.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from nudiff import checkpoint as shared
from nudiff.utils import write_json


def _tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}


def torch_rng_to_json() -> str:
    return base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()


def torch_rng_from_json(text: str) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8))


def save_checkpoint(
    out: str | os.PathLike, step: int, model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, state: dict[str, Any],
) -> Path:
    """Write ``out/checkpoints/step_<step>/`` atomically; return its path."""
    tensors, meta = shared.flatten_optimizer(optimizer.state_dict())
    return shared.write_checkpoint(out, step, {
        "model.safetensors": _tensors(model.state_dict()),
        "optimizer.safetensors": tensors,
        "optimizer.json": meta,
        "state.json": {"step": step, **state},
    })


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load weights and optimizer state from a checkpoint folder; return its ``state.json``."""
    files = shared.read_checkpoint(path)
    model.load_state_dict(files["model.safetensors"])
    optimizer.load_state_dict(
        shared.unflatten_optimizer(files["optimizer.safetensors"], files["optimizer.json"]))
    return files["state.json"]


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """Finished checkpoints under ``out/checkpoints``, oldest first."""
    return [p for _, p in shared.list_checkpoints(out)]


def save_model(
    folder: str | os.PathLike, model: torch.nn.Module, config_writer, info: dict[str, Any]
) -> Path:
    """Export ``model.safetensors`` + ``config.yaml`` (via ``config_writer(path)``) + ``info.json``
    into ``folder`` atomically (the folder is replaced as a whole)."""
    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_tensors(model.state_dict()), str(tmp / "model.safetensors"))
    config_writer(tmp / "config.yaml")
    write_json(tmp / "info.json", info)
    old = folder.with_name(f".{folder.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder
