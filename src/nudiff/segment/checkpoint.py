"""Training checkpoints and the exported model, as safetensors + JSON (never pickles).

A checkpoint is a folder ``checkpoints/step_000500/`` holding

- ``model.safetensors``     the network's state dict (weights and BatchNorm statistics);
- ``optimizer.safetensors`` every per-parameter optimizer tensor, keyed ``state.<i>.<name>``;
- ``optimizer.json``        the optimizer's param groups (hyper-parameters, parameter ids);
- ``state.json``            step, scheduler state, RNG states, best validation so far, ...

It is written to a hidden temporary folder and renamed into place, so a crash never leaves
a half-written checkpoint. The exported model (``model/``) is written the same way.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nudiff.utils import read_json, write_json

PREFIX = "step_"


def _tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}


def optimizer_to_flat(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors for safetensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for pid, entry in opt_state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def torch_rng_to_json() -> str:
    return base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()


def torch_rng_from_json(text: str) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8))


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename folder ``tmp`` onto ``final`` (replacing it) with no moment where neither exists
    in a half-written state."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Write ``root/step_<step>/`` atomically; return its path."""
    root = Path(root)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_tensors(model.state_dict()), str(tmp / "model.safetensors"))
    tensors, meta = optimizer_to_flat(optimizer.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    write_json(tmp / "optimizer.json", meta)
    write_json(tmp / "state.json", {"step": step, **state})
    _replace_dir(tmp, final)
    return final


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load weights and optimizer state from a checkpoint folder; return its ``state.json``."""
    path = Path(path)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    opt_tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer.load_state_dict(optimizer_from_flat(opt_tensors, read_json(path / "optimizer.json")))
    return read_json(path / "state.json")


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Finished checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").exists()
    )


def prune_checkpoints(root: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old)


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
    _replace_dir(tmp, folder)
    return folder
