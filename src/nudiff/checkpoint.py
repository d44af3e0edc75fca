"""Training checkpoints: safetensors + JSON only (no pickle), written atomically.

Layout of ``out_dir/checkpoints/step_0001000/``:

- ``model.safetensors``: trained weights; ``ema.safetensors``: EMA weights;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state dict, its tensors
  flattened as ``state.<param id>.<name>`` and the rest (param groups, non-tensor state) in JSON;
- ``state.json``: step, LR-scheduler state, EMA update count, grad-scaler state, the RNG
  states of python / numpy / torch, the data-sampler seeding.

A checkpoint is assembled in ``checkpoints/.tmp-step_…`` and renamed into place when complete,
so a kill at any moment leaves either a complete checkpoint or a temporary folder that
:func:`list_checkpoints` ignores (and :func:`remove_partial` deletes).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nudiff.utils import read_json, write_json

_NAME = re.compile(r"^step_(\d{7,})$")
TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``out_dir/checkpoints`` as (step, path), oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def remove_partial(out_dir: str | Path) -> None:
    """Delete temporary folders left by a kill during a save."""
    root = Path(out_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def prune(out_dir: str | Path, keep: int) -> None:
    """Keep only the ``keep`` newest complete checkpoints."""
    for _, path in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def write_checkpoint(out_dir: str | Path, step: int, files: dict[str, Any]) -> Path:
    """Write a checkpoint atomically. ``files``: name -> tensor dict (``.safetensors``) or
    JSON-able object (``.json``). Returns the final folder."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{TMP_PREFIX}{final.name}-"))
    try:
        for name, content in files.items():
            if name.endswith(".safetensors"):
                save_file(content, str(tmp / name))
            else:
                write_json(tmp / name, content)
        if final.exists():  # same step saved again (e.g. resumed at the end): replace it
            old = root / f"{TMP_PREFIX}old-{final.name}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read every ``.safetensors`` / ``.json`` file of a checkpoint folder by name."""
    out: dict[str, Any] = {}
    for p in sorted(Path(path).iterdir()):
        if p.suffix == ".safetensors":
            out[p.name] = load_file(str(p))
        elif p.suffix == ".json":
            out[p.name] = read_json(p)
    return out


# --- optimizer state dict <-> (tensors, JSON) ---------------------------------------------


def flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into safetensors-ready tensors and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict] = {}
    for pid, st in state_dict["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                other.setdefault(str(pid), {})[key] = value
    meta = {"param_groups": state_dict["param_groups"], "state": other}
    json.dumps(meta)  # fail now, not at load time, if something is not JSON-able
    return tensors, meta


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, st in meta["state"].items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# --- RNG states <-> JSON -------------------------------------------------------------------


def rng_state() -> dict:
    """Global RNG states of python, numpy and torch (CPU and CUDA) as JSON-able data."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state().numpy().tobytes().hex(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes().hex() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), *rest))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in state["cuda"]])


def _bytes_tensor(hex_string: str) -> torch.Tensor:
    return torch.frombuffer(bytearray.fromhex(hex_string), dtype=torch.uint8).clone()


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x
