"""Where a GPU step's time goes: kernel-launch latency, and one training step / one sampling
call of the configs/kumar-gpu.yaml models, each alone on the GPU (no other process).

    python benchmarks/gpu_step_times.py OUT.json

Written after the first GPU lease (benchmarks/results/kumar-grid-gpu/README.md): side by side,
the structure model trained at 8 steps/s and the image model at 1.6 on an H200, which looked
launch-bound; this measures it, then the levers against it: batch 256, SDPA attention
(``model.flash_attention``) and ``torch.compile`` in its ``default`` and ``reduce-overhead``
(CUDA graphs) modes (``train.compile``; its compile time too). Each number is the
median of a few timed repeats after warm-up, with torch.cuda.synchronize() around them.
(The committed gpu_step_times.json predates the levers.)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int = 5, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_model(
    kind: str,
    cfg,
    dev: torch.device,
    batches=(16, 64),
    tag: str = "",
    compile_model: str | None = None,
) -> dict:
    """Forward, forward + backward and whole training step (with the EMA update) of one model;
    ``compile_model``: ``nn.Module.compile(mode=...)`` of the U-Net, as ``train.compile`` does
    (its compile time is reported)."""
    from nudiff.diffusion.ema import EMA
    from nudiff.diffusion.networks import Denoiser, condition_tensor

    model = Denoiser(cfg).to(dev)
    ema = EMA(model, 0.999)
    ema.model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    p, res = cfg.data.patch_size, {}
    name = kind + tag  # keys of the results
    if compile_model:
        model.net.compile(mode=compile_model)
    for b in batches:
        xt = torch.randn(b, 3, p, p, device=dev)
        t = torch.randint(0, 1000, (b,), device=dev)
        cond = condition_tensor(torch.randn(b, 3, p, p, device=dev)) if kind == "image" else None

        def fwd_bwd(xt=xt, t=t, cond=cond):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                pred = model(xt, t, cond)
            F.mse_loss(pred.float(), xt).backward()

        def full_step():
            fwd_bwd()
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(model)

        @torch.no_grad()
        def fwd(xt=xt, t=t, cond=cond):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model(xt, t, cond)

        if compile_model and f"{name}_compile_s" not in res:
            t0 = time.perf_counter()
            fwd_bwd()
            torch.cuda.synchronize()
            res[f"{name}_compile_s"] = round(time.perf_counter() - t0, 1)
        res[f"{name}_b{b}_fwd_ms"] = round(timed(fwd) * 1e3, 1)
        res[f"{name}_b{b}_fwd_bwd_ms"] = round(timed(fwd_bwd) * 1e3, 1)
        res[f"{name}_b{b}_step_ms"] = round(timed(full_step) * 1e3, 1)
    res[f"{name}_ema_update_ms"] = round(timed(lambda: ema.update(model)) * 1e3, 1)
    return res


def main(out: Path) -> None:
    from nudiff.diffusion.networks import Denoiser
    from nudiff.diffusion.sample import sample_images, sample_structures
    from nudiff.experiment import load_plan
    from nudiff.structure import DecodeParams, decode

    dev = torch.device("cuda")
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    x = torch.zeros(16, device=dev)

    def launches():
        for _ in range(1000):
            x.add_(1)

    res["launch_us"] = round(timed(launches) / 1000 * 1e6, 2)
    plan = load_plan(ROOT / "configs" / "kumar-gpu.yaml")
    for kind in ("structure", "image"):
        res |= time_model(kind, getattr(plan, kind), dev)
        print(json.dumps(res), flush=True)
    # levers against a dispatch-bound step: a bigger batch, SDPA attention, torch.compile
    from dataclasses import replace

    res |= time_model("structure", plan.structure, dev, batches=(256,))
    flash = replace(plan.image, model=replace(plan.image.model, flash_attention=True))
    res |= time_model("image", flash, dev, batches=(64,), tag="_flash")
    print(json.dumps(res), flush=True)
    for mode, tag in (("default", "_compiled"), ("reduce-overhead", "_graphs")):
        for kind, cfg in (("image", flash), ("structure", plan.structure)):
            try:
                res |= time_model(kind, cfg, dev, batches=(64,), tag=tag, compile_model=mode)
            except Exception as e:  # noqa: BLE001 - a measurement: record why it failed
                res[f"{kind}{tag}_error"] = repr(e)[:300]
            print(json.dumps(res), flush=True)
    structure = Denoiser(plan.structure).to(dev).eval()
    image = Denoiser(plan.image).to(dev).eval()
    t0 = time.perf_counter()
    s = sample_structures(
        structure,
        64,
        seed=0,
        sampler="dpmsolver++",
        steps=20,
        batch_size=64,
        precision="bf16",
        progress=False,
    )
    res["sample_64_structures_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    insts = [decode(structure_map, DecodeParams(min_marker=2)) for structure_map in s[:8]]
    res["decode_8_untrained_structures_s"] = round(time.perf_counter() - t0, 2)
    res["nuclei_in_8_untrained"] = [int(i.max()) for i in insts]
    cond = torch.zeros(64, 3, 128, 128).numpy()
    t0 = time.perf_counter()
    sample_images(
        image,
        cond,
        seed=0,
        sampler="dpmsolver++",
        steps=20,
        guidance_scale=2.0,
        batch_size=64,
        precision="bf16",
        progress=False,
    )
    res["sample_64_images_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(res), flush=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
