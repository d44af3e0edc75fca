"""The plumbing both training loops share: schedule, run log, training state, atomic folders."""

import base64
import csv
import random

import numpy as np
import pytest
import torch

from nudiff import checkpoint as ckpt
from nudiff.training import (
    RunLog,
    TrainConfig,
    newest_checkpoint,
    read_log,
    save_checkpoint,
    start_run,
    warmup_cosine,
)
from nudiff.utils import NudiffError, atomic_folder, write_json


def test_warmup_cosine_constant_and_floor():
    f = warmup_cosine(100, 10, min_lr_ratio=0.1)
    assert [f(0), f(9), f(10)] == [pytest.approx(0.1), 1.0, 1.0]
    assert f(100) == pytest.approx(0.1) and f(55) == pytest.approx(0.55)
    assert warmup_cosine(100, 10, constant=True)(90) == 1.0
    assert warmup_cosine(100, 0, progress=lambda: 1.0)(0) == pytest.approx(0.0, abs=1e-12)


def test_base_train_config_checks():
    with pytest.raises(NudiffError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(NudiffError, match="log_every"):
        TrainConfig(log_every=0)


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_run_log_drops_rows_after_the_resumed_step_and_reads_old_logs(tmp_path):
    log = RunLog(tmp_path, ["val_pq"])
    for step in (1, 2, 3):
        log.write(step, {"loss": 1.0 / step, "lr": 0.1, "steps_per_s": 5.0})
    log.write(3, {"val_pq": 0.5})
    log.close()
    assert [r["step"] for r in _rows(tmp_path / "train_log.csv")] == ["1", "2", "3", "3"]
    RunLog(tmp_path, ["val_pq"], start_step=2).close()
    assert [r["step"] for r in _rows(tmp_path / "train_log.csv")] == ["1", "2"]
    assert (tmp_path / "tb").is_dir()

    old = tmp_path / "old"  # a segmenter run of an earlier version: log.csv, or it_per_s
    old.mkdir()
    (old / "log.csv").write_text("step,loss,lr,it_per_s\n1,0.5,0.1,3.0\n2,0.4,0.1,3.0\n")
    assert read_log(old)[0] == {"step": "1", "loss": "0.5", "lr": "0.1", "steps_per_s": "3.0"}
    RunLog(old, start_step=1).close()
    assert _rows(old / "train_log.csv") == [
        {"step": "1", "loss": "0.5", "lr": "0.1", "steps_per_s": "3.0"}
    ]


def _trained_pair():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(10, 2))
    for _ in range(2):
        model(torch.rand(2, 3, 8, 8)).square().mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_training_state_round_trip_with_rngs(tmp_path):
    model, opt, sched = _trained_pair()
    gen = np.random.default_rng(7)
    gen.random(3)
    torch.manual_seed(5)
    random.seed(3)
    for step in (1, 2, 3):
        ckpt.save_training_state(
            tmp_path, step, {"model": model}, opt, sched, {"note": step}, generator=gen
        )
    ckpt.prune(tmp_path, 2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 3]
    expected = (gen.random(), torch.rand(3), random.random())

    model2, opt2, sched2 = _trained_pair()
    with torch.no_grad():
        for p in model2.parameters():
            p.zero_()
    gen2 = np.random.default_rng(0)
    state = ckpt.load_training_state(
        ckpt.list_checkpoints(tmp_path)[-1][1], {"model": model2}, opt2, sched2, gen2
    )
    assert state == {"step": 3, "note": 3}
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), model2.state_dict().values())
    )
    assert sched2.state_dict() == sched.state_dict()
    got = (gen2.random(), torch.rand(3), random.random())
    assert got[0] == expected[0] and torch.equal(got[1], expected[1]) and got[2] == expected[2]


class _Fp16Accelerator:
    """What start_run/save_checkpoint use of an fp16 accelerate.Accelerator, on the CPU."""

    is_main_process = True

    def __init__(self):
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)

    def prepare(self, *objects):
        return objects

    def wait_for_everyone(self):
        pass


class _Config:
    def __init__(self):
        self.train = TrainConfig(keep_checkpoints=2)


def test_a_resumed_fp16_run_keeps_its_loss_scale(tmp_path, monkeypatch):
    monkeypatch.setattr("nudiff.config.save_config", lambda cfg, path: None)
    model, opt, sched = _trained_pair()
    acc = _Fp16Accelerator()
    run = start_run(tmp_path, _Config(), acc, {"model": model}, opt, sched, None)
    acc.scaler.scale(torch.ones(1))  # the scale is made on first use
    acc.scaler.update(new_scale=128.0)  # what overflowing fp16 steps leave behind
    save_checkpoint(run, 5, {"ema_updates": 5})

    acc2 = _Fp16Accelerator()
    model2, opt2, sched2 = _trained_pair()
    resumed = start_run(
        tmp_path,
        _Config(),
        acc2,
        {"model": model2},
        opt2,
        sched2,
        newest_checkpoint(tmp_path, True),
    )
    assert resumed.start == 5 and resumed.state == {"ema_updates": 5}
    assert acc2.scaler.get_scale() == 128.0


def test_a_segmenter_checkpoint_of_the_earlier_format_loads(tmp_path):
    model, opt, sched = _trained_pair()
    gen = np.random.default_rng(1)
    torch.manual_seed(9)
    tensors, meta = ckpt.flatten_optimizer(opt.state_dict())
    ckpt.write_checkpoint(
        tmp_path,
        4,
        {
            "model.safetensors": ckpt.state_dict_cpu(model),
            "optimizer.safetensors": tensors,
            "optimizer.json": meta,
            "state.json": {
                "step": 4,
                "best_pq": 0.5,
                "scheduler": sched.state_dict(),
                "numpy_rng": gen.bit_generator.state,
                "torch_rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
            },
        },
    )
    expected = (gen.random(), torch.rand(2))
    model2, opt2, sched2 = _trained_pair()
    gen2 = np.random.default_rng(0)
    state = ckpt.load_training_state(
        ckpt.list_checkpoints(tmp_path)[0][1], {"model": model2}, opt2, sched2, gen2
    )
    assert state == {"step": 4, "best_pq": 0.5}
    assert gen2.random() == expected[0] and torch.equal(torch.rand(2), expected[1])


def test_atomic_folder_replaces_the_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as tmp:
        write_json(tmp / "a.json", 1)
    with atomic_folder(target) as tmp:
        write_json(tmp / "b.json", 2)
    assert sorted(p.name for p in target.iterdir()) == ["b.json"]
    with pytest.raises(KeyboardInterrupt), atomic_folder(target) as tmp:
        write_json(tmp / "c.json", 3)
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["b.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert target.stat().st_mode & 0o077  # not owner-only, as mkdtemp makes it
