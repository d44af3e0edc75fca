import csv

import numpy as np
import pytest
from safetensors.torch import load_file

import nudiff.segment.train as train_mod
from nudiff.model_folder import read_info
from nudiff.segment.train import choose_items, lr_factor, train_segmenter
from nudiff.utils import NudiffError


def _log(run):
    with (run / "train_log.csv").open() as f:
        return list(csv.DictReader(f))


def test_loss_decreases(tmp_path, make_toy, make_config):
    cfg = make_config(steps=30, precision="bf16", checkpoint_every=30, log_every=5)
    toys = [make_toy(s) for s in range(6)]
    run = train_segmenter(cfg, tmp_path / "run", toys, progress=False)
    losses = [float(r["loss"]) for r in _log(run) if r["loss"]]
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0]
    assert (run / "model" / "model.safetensors").exists()
    assert read_info(run / "model")["selected_by"] == "final"
    # a row's lr is the LR its last update used (update index step - 1), as in the diffusion log
    f = lr_factor(cfg)
    for r in _log(run):
        assert float(r["lr"]) == pytest.approx(cfg.train.lr * f(int(r["step"]) - 1))


def test_real_ratio_sampling_proportion():
    rng = np.random.default_rng(0)
    real, syn = np.full(5, 64.0**2), np.full(50, 64.0**2)
    items = choose_items(rng, 4000, real, syn, 0.25)
    assert abs(np.mean([p == "real" for p, _ in items]) - 0.25) < 0.03
    assert all(0 <= i < (5 if p == "real" else 50) for p, i in items)
    # plain union: in proportion to pixel area (one 1000-px image vs 50 patches of 64 px)
    items = choose_items(rng, 4000, np.array([1000.0**2]), syn, None)
    share = 1000.0**2 / (1000.0**2 + syn.sum())
    assert abs(np.mean([p == "real" for p, _ in items]) - share) < 0.03
    assert all(p == "real" for p, _ in choose_items(rng, 100, real, None, 0.1))


def test_warmup_then_cosine(make_config):
    cfg = make_config(steps=100, warmup_steps=10)
    f = lr_factor(cfg)
    assert f(0) == pytest.approx(0.1)
    assert f(10) == pytest.approx(1.0)
    assert f(100) == pytest.approx(0.0, abs=1e-9)


def test_exact_resume(tmp_path, make_toy, make_config, monkeypatch):
    cfg = make_config(steps=6, checkpoint_every=3, val_every=3, keep_checkpoints=1)
    real = [make_toy(s) for s in range(3)]
    syn = [make_toy(s, (48, 48)) for s in range(10, 13)]
    val = [make_toy(99, (70, 90))]
    straight = train_segmenter(cfg, tmp_path / "a", real, syn, val, progress=False)

    calls = {"n": 0}
    make_batch = train_mod.make_batch

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return make_batch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "make_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(cfg, tmp_path / "b", real, syn, val, progress=False)
    monkeypatch.setattr(train_mod, "make_batch", make_batch)
    with pytest.raises(NudiffError, match="resume"):
        train_segmenter(cfg, tmp_path / "b", real, syn, val, progress=False)
    resumed = train_segmenter(cfg, tmp_path / "b", real, syn, val, resume=True, progress=False)

    for name in (
        "checkpoints/step_0000006/model.safetensors",
        "checkpoints/step_0000006/optimizer.safetensors",
        "model/model.safetensors",
    ):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a), name
    drop = ("steps_per_s",)
    rows = [
        [{k: v for k, v in r.items() if k not in drop} for r in _log(run)]
        for run in (straight, resumed)
    ]
    assert rows[0] == rows[1]
    assert [p.name for p in (resumed / "checkpoints").iterdir()] == ["step_0000006"]


def test_model_selection_keeps_best_val(tmp_path, make_toy, make_config, monkeypatch):
    scripted = iter([0.2, 0.7, 0.4])

    def fake_validate(model, cfg, val):
        pq = next(scripted)
        return {"dice": pq, "aji": pq, "aji_plus": pq, "dq": pq, "sq": pq, "pq": pq}

    monkeypatch.setattr(train_mod, "validate", fake_validate)
    cfg = make_config(steps=6, val_every=2, checkpoint_every=2, keep_checkpoints=3)
    run = train_segmenter(
        cfg, tmp_path / "run", [make_toy(0)], None, [make_toy(1)], progress=False
    )
    info = read_info(run / "model")
    assert info["step"] == 4 and info["selected_by"] == "val_pq" and info["val"]["pq"] == 0.7
    best, ckpt4 = (
        load_file(run / "model/model.safetensors"),
        load_file(run / "checkpoints/step_0000004/model.safetensors"),
    )
    assert all(np.array_equal(best[k].numpy(), ckpt4[k].numpy()) for k in best)
    assert [r["val_pq"] for r in _log(run) if r["val_pq"]] == ["0.2", "0.7", "0.4"]


def test_bad_samples_are_reported(tmp_path, make_toy, make_config):
    toy = make_toy(0)
    toy.instance_map = toy.instance_map[:10]
    with pytest.raises(NudiffError, match="instance map"):
        train_segmenter(make_config(), tmp_path / "run", [toy], progress=False)


def test_post_processing_tuned_on_val(tmp_path, make_toy, make_config):
    from nudiff.segment.predict import load_segmenter

    cfg = make_config(steps=20, val_every=20, checkpoint_every=20)
    toys = [make_toy(s) for s in range(4)]
    run = train_segmenter(
        cfg, tmp_path / "run", toys, None, [make_toy(7, (64, 96))], progress=False
    )
    tuning = read_info(run / "model")["post_tuning"]
    assert tuning["val_after"]["pq"] >= tuning["val_before"]["pq"]
    _, loaded = load_segmenter(run)
    for k, v in (tuning["chosen"] or {}).items():
        assert getattr(loaded.post, k) == v


def test_post_candidates_cover_both_decoders():
    from nudiff.segment.train import POST_SOBEL, post_candidates
    from nudiff.structure import DecodeParams

    candidates = post_candidates()
    methods = [c["method"] for c in candidates]
    assert methods.count("hovernet") == len(POST_SOBEL) and "nudiff" in methods
    for c in candidates:  # every candidate is a valid decoder setting
        DecodeParams(**c)


def test_synthetic_weight_reweights_the_two_parts_of_a_batch():
    import torch

    from nudiff.segment.loss import HoVerNetLossParts, structure_targets
    from nudiff.segment.train import weighted_loss_parts

    torch.manual_seed(0)
    pred = {
        "nucleus_prediction": torch.randn(4, 2, 16, 16),
        "horizontal_vertical": torch.randn(4, 2, 16, 16),
    }
    target = structure_targets(
        torch.cat([(torch.rand(4, 1, 16, 16) > 0.5).float(), torch.rand(4, 2, 16, 16) * 2 - 1], 1)
    )
    fn, syn = HoVerNetLossParts(), [False, True, False, True]
    plain = weighted_loss_parts(fn, pred, target, syn, 1.0)
    assert all(torch.equal(plain[k], v) for k, v in fn.parts(pred, target).items())
    real_only = fn.parts(
        {k: v[[0, 2]] for k, v in pred.items()}, {k: v[[0, 2]] for k, v in target.items()}
    )
    zero = weighted_loss_parts(fn, pred, target, syn, 0.0)
    assert all(torch.allclose(zero[k], real_only[k]) for k in real_only)
    half = weighted_loss_parts(fn, pred, target, syn, 0.5)
    syn_only = fn.parts(
        {k: v[[1, 3]] for k, v in pred.items()}, {k: v[[1, 3]] for k, v in target.items()}
    )
    assert all(torch.allclose(half[k], (2 * real_only[k] + 1 * syn_only[k]) / 3) for k in half)


def test_no_synthetic_items_after_synthetic_until(tmp_path, make_toy, make_config, monkeypatch):
    cfg = make_config(steps=6, checkpoint_every=6, log_every=3)
    cfg.train.real_ratio, cfg.train.synthetic_until = 0.0, 3  # pre-train on synthetic, then real
    drawn = []
    make_batch = train_mod.make_batch

    def spy(pools, items, *args, **kwargs):
        drawn.append({p for p, _ in items})
        return make_batch(pools, items, *args, **kwargs)

    monkeypatch.setattr(train_mod, "make_batch", spy)
    real, syn = [make_toy(s) for s in range(2)], [make_toy(s) for s in range(10, 12)]
    train_segmenter(cfg, tmp_path / "run", real, syn, progress=False)
    assert drawn == [{"synthetic"}] * 3 + [{"real"}] * 3
