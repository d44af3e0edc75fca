"""Small shared helpers: atomic writes, JSON, seeding, one-line errors."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TMP_PREFIX = ".tmp-"  # temporary files and folders that atomic writes leave after a crash


class NudiffError(Exception):
    """An error the user can fix; the CLI prints it as one line, without a traceback."""


class DataError(NudiffError):
    """Bad input data. The message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A reader never sees a half-written file and a crash leaves the old file intact.
    The temporary name keeps the suffix so that writers that look at it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes it owner-only; give it a normal file's mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; on success it replaces ``path`` as a whole.

    A reader sees the old folder or the complete new one, never a mix; a crash leaves the old
    folder and a hidden ``.tmp-<name>-*`` folder (which :func:`nudiff.checkpoint.remove_partial`
    deletes among checkpoints), nothing half-written under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}-"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{TMP_PREFIX}old-{path.name}-"))
            os.replace(path, old / path.name)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def module_doc(name: str) -> str | None:
    """The docstring of module ``name``, read from its source without importing it (a
    subcommand's ``--help`` shows a heavy module's documentation without loading torch)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8")))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg} at line {e.lineno})") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch

    torch.manual_seed(seed)


def native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 in hardware. An x86 CPU needs AVX512-BF16 or AMX; an
    Arm CPU its BF16 instructions, a GPU compute capability 8.0 or newer. Elsewhere bf16 is
    emulated: a training step of the grid's networks ran 9-28x slower than fp32 on an AVX2-only
    EPYC (benchmarks/results/precision_speed.md). A device this cannot tell about counts as
    native (the configuration is followed)."""
    import torch

    device = torch.device(device)
    try:
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        if device.type != "cpu":
            return True
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return bool(
                torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
            )
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError, TypeError):  # private torch checks moved or gone
        return True


def machine() -> str:
    """A line naming this machine's CPU and core count."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = "native bf16" if native_bf16("cpu") else "no native bf16: fp32"
    return f"{cpu}, {os.cpu_count()} cores ({bf16})"


@functools.cache
def _warn_emulated_bf16(device: str) -> None:
    print(
        f"nudiff: warning: precision bf16 asked for, but this {device} has no native bf16 "
        "(a CPU needs AVX512-BF16 or AMX) and emulates it many times slower than fp32: running in "
        "fp32",
        file=sys.stderr,
    )


def resolve_precision(precision: str, device=None, warn: bool = True) -> str:
    """The precision to run: ``precision``, except ``"bf16"`` on a device without native bf16
    (:func:`native_bf16`), which runs in fp32 (``"no"``) with a one-line warning per process
    (``warn=False``: none, for a caller that only reports what would run).
    Numbers then differ from a bf16 run as they do across thread counts; speed does not drop
    by an order of magnitude."""
    if precision != "bf16":
        return precision
    device = default_device() if device is None else device
    if native_bf16(device):
        return precision
    if warn:
        _warn_emulated_bf16(str(device))
    return "no"


def autocast(device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` ("bf16", "fp16"; "no": none) on ``device`` for inference,
    resolved by :func:`resolve_precision`."""
    import torch

    device = torch.device(device)
    precision = resolve_precision(precision, device)
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def make_accelerator(precision: str):
    """An ``accelerate.Accelerator`` with this mixed precision ("no", "bf16", "fp16"), resolved
    by :func:`resolve_precision` (bf16 on a CPU that only emulates it runs in fp32).

    accelerate keeps one process-wide state and refuses a second Accelerator with another
    precision (an experiment trains diffusion models and segmenters in one process): reset it,
    keeping the distributed (PartialState) part.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    precision = resolve_precision(precision)
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=precision)


def default_device():
    """``cuda`` when a GPU is there, else ``cpu`` (a ``torch.device``)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(n: int | None) -> None:
    """Torch intra-op threads; ``None`` keeps the default. Use 1 on a CPU shared with other
    jobs: 2 OpenMP threads that wait for each other behind another process run 5-30x slower."""
    if n:
        import torch

        torch.set_num_threads(n)


def progress_bar(*args: Any, **kwargs: Any):
    """A tqdm bar that redraws at most every 30 s when stderr is not a terminal (nohup logs,
    CI), instead of one line per step; on a terminal, tqdm's defaults."""
    from tqdm import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(*args, **kwargs)
