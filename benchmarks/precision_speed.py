"""bf16 autocast against fp32 on this CPU: one training step of the grid's two networks.

Times forward + backward + AdamW of the segmenter (``segment`` of configs/cpu-grid.yaml, batch
8 of 256 px crops) and of the image diffusion model (``image``, batch 16 of 64 px with its
SPADE condition), in fp32 and under ``torch.autocast(bfloat16)`` forced on, and records what
nudiff runs when a configuration asks for bf16 (:func:`nudiff.utils.resolve_precision`). On
a CPU with AVX512-BF16 or AMX, bf16 is the faster; on one that only emulates it (AVX2), it is
an order of magnitude slower, and nudiff runs fp32 instead.

Results accumulate by machine (CPU model, vector capability, threads) in
``benchmarks/results/precision_speed.json`` and ``.md``:

    .venv/bin/python benchmarks/precision_speed.py --threads 1   # ~3 min on an AVX2 CPU
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from nudiff.diffusion.networks import Denoiser, condition_tensor
from nudiff.experiment import load_plan
from nudiff.segment.model import build_segmenter
from nudiff.utils import native_bf16, read_json, resolve_precision, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def time_steps(model: torch.nn.Module, inputs: tuple, bf16: bool, steps: int) -> list[float]:
    """Seconds of each of ``steps`` training steps (after one untimed warm-up)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(*inputs)
        loss = sum(
            o.float().pow(2).mean() for o in (out.values() if isinstance(out, dict) else [out])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return times


def networks(config: Path) -> dict[str, tuple[torch.nn.Module, tuple]]:
    plan = load_plan(config)
    seg = build_segmenter(plan.segment)
    crop, batch = plan.segment.train.crop_size, plan.segment.train.batch_size
    x = torch.rand(batch, 3, crop, crop)
    if plan.segment.model.channels_last:
        seg, x = (
            seg.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    img = Denoiser(plan.image)
    size, b = plan.image.data.patch_size, plan.image.train.batch_size
    cond = condition_tensor(torch.rand(b, 3, size, size))  # + the indicator channel
    t = torch.randint(0, 1000, (b,))
    return {
        f"segmenter (batch {batch}, {crop} px)": (seg, (x,)),
        f"image model (batch {b}, {size} px)": (img, (torch.randn(b, 3, size, size), t, cond)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu-grid.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--steps", type=int, default=3, help="timed fp32 steps (bf16: 2 when emulated)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    native = native_bf16("cpu")
    machine = {
        "cpu": cpu_name(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native,
        "bf16_config_runs": resolve_precision("bf16", "cpu"),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    rows = {}
    for name, (model, inputs) in networks(args.config).items():
        fp32 = time_steps(model, inputs, False, args.steps)
        bf16 = time_steps(model, inputs, True, args.steps if native else 2)
        rows[name] = {
            "fp32_s_per_step": float(np.median(fp32)),
            "bf16_s_per_step": float(np.median(bf16)),
            "bf16_over_fp32": float(np.median(bf16) / np.median(fp32)),
        }
        print(name, rows[name], flush=True)
    key = f"{machine['cpu']} | {machine['capability']} | {args.threads} thread(s)"
    path = args.out / "precision_speed.json"
    saved = read_json(path) if path.exists() else {}
    saved[key] = {"machine": machine, "steps": rows, "config": str(args.config.relative_to(ROOT))}
    write_json(path, saved)
    lines = [
        "| CPU | capability | native bf16 | threads | network | fp32 s/step | bf16 s/step | bf16 "
        "/ fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in saved.values():
        m = entry["machine"]
        for name, r in entry["steps"].items():
            lines.append(
                f"| {m['cpu']} | {m['capability']} | {'yes' if m['native_bf16'] else 'no'} | "
                f"{m['threads']} | {name} | {r['fp32_s_per_step']:.2f} | "
                f"{r['bf16_s_per_step']:.2f} | "
                f"{r['bf16_over_fp32']:.1f}x |"
            )
    write_text(
        args.out / "precision_speed.md",
        "# bf16 autocast vs fp32, one training step (`benchmarks/precision_speed.py`)\n\n"
        "A configuration's `precision: bf16` runs in fp32 where bf16 is not native.\n\n"
        + "\n".join(lines)
        + "\n",
    )


if __name__ == "__main__":
    main()
