"""Training checkpoints of both loops: safetensors + JSON only (no pickle), written atomically.

Layout of ``out_dir/checkpoints/step_0001000/`` (:func:`save_training_state`):

- ``model.safetensors``: trained weights (the diffusion loop adds ``ema.safetensors``);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer state dict, its tensors
  flattened as ``state.<param id>.<name>`` and the rest (param groups, non-tensor state) in JSON;
- ``state.json``: ``step``, ``lr_scheduler`` (its state), ``rng`` (:func:`rng_state`: python,
  numpy, torch, CUDA, and the loop's own numpy ``Generator`` if it has one), then what the
  loop keeps besides (EMA update count, best validation score, ...).

A checkpoint is assembled in ``checkpoints/.tmp-step_…`` and renamed into place when complete,
so a kill at any moment leaves either a complete checkpoint or a temporary folder that
:func:`list_checkpoints` ignores (and :func:`remove_partial` deletes). Checkpoints of earlier
segmenter runs (``scheduler``, ``numpy_rng``, ``torch_rng`` in base64) still load.
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nudiff.utils import TMP_PREFIX, atomic_folder, read_json, write_json

_NAME = re.compile(r"^step_(\d{7,})$")


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
    final = Path(out_dir) / "checkpoints" / checkpoint_name(step)
    with atomic_folder(final) as tmp:  # the same step saved again (resumed at the end): replaced
        for name, content in files.items():
            if name.endswith(".safetensors"):
                save_file(content, str(tmp / name))
            else:
                write_json(tmp / name, content)
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


# --- the training state of a loop ---------------------------------------------------------


def state_dict_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of a state dict (what safetensors wants)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def save_training_state(
    out_dir: str | Path,
    step: int,
    weights: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    lr_schedule,
    state: dict[str, Any],
    generator: np.random.Generator | None = None,
) -> Path:
    """Write checkpoint ``step`` of a training loop (see the module docstring): ``weights``
    (file stem -> module, e.g. ``{"model": net, "ema": ema_net}``), the optimizer, the LR
    schedule, the global RNGs (and ``generator``'s) and the loop's own ``state`` (JSON-able)."""
    tensors, meta = flatten_optimizer(optimizer.state_dict())
    files: dict[str, Any] = {
        f"{name}.safetensors": state_dict_cpu(m) for name, m in weights.items()
    }
    files |= {
        "optimizer.safetensors": tensors,
        "optimizer.json": meta,
        "state.json": {
            "step": step,
            "lr_scheduler": lr_schedule.state_dict(),
            "rng": rng_state(generator),
            **state,
        },
    }
    return write_checkpoint(out_dir, step, files)


def load_training_state(
    path: str | Path,
    weights: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    lr_schedule,
    generator: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Load what :func:`save_training_state` wrote into un-prepared objects, restore the RNGs;
    return ``state.json`` (``step`` and the loop's own entries)."""
    files = read_checkpoint(path)
    state = files["state.json"]
    for name, module in weights.items():
        module.load_state_dict(files[f"{name}.safetensors"])
    optimizer.load_state_dict(
        unflatten_optimizer(files["optimizer.safetensors"], files["optimizer.json"])
    )
    lr_schedule.load_state_dict(
        state.pop("lr_scheduler") if "lr_scheduler" in state else state.pop("scheduler")
    )
    if "rng" in state:
        set_rng_state(state.pop("rng"), generator)
    else:  # a segmenter checkpoint of an earlier version
        torch.set_rng_state(
            torch.frombuffer(
                bytearray(base64.b64decode(state.pop("torch_rng"))), dtype=torch.uint8
            )
        )
        if generator is not None:
            generator.bit_generator.state = state.pop("numpy_rng")
    return state


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


def rng_state(generator: np.random.Generator | None = None) -> dict:
    """Global RNG states of python, numpy and torch (CPU and CUDA), and ``generator``'s, as
    JSON-able data."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *map(_plain, np_state[2:])],
        "torch": torch.get_rng_state().numpy().tobytes().hex(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes().hex() for s in torch.cuda.get_rng_state_all()]
    if generator is not None:
        state["generator"] = generator.bit_generator.state
    return state


def set_rng_state(state: dict, generator: np.random.Generator | None = None) -> None:
    """Restore what :func:`rng_state` returned (``generator``'s state too, if saved)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), *rest))
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(s) for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.bit_generator.state = state["generator"]


def _bytes_tensor(hex_string: str) -> torch.Tensor:
    return torch.frombuffer(bytearray.fromhex(hex_string), dtype=torch.uint8).clone()


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x
