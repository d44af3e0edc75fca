import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nudiff.checkpoint import list_checkpoints
from nudiff.diffusion.sample import load_model
from nudiff.diffusion.train import WallClock, train
from nudiff.training import warmup_cosine
from nudiff.utils import NudiffError


def _weights(path):
    return load_file(str(path))


def _assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), k


@pytest.mark.parametrize(
    "kind,conditioning", [("structure", "spade"), ("image", "spade"), ("image", "concat")]
)
def test_train_writes_everything(tmp_path, make_config, toy_patches, kind, conditioning):
    images, inst = toy_patches
    cfg = make_config(
        kind,
        conditioning,
        steps=4,
        checkpoint_every=2,
        sample_every=2,
        precision="bf16" if conditioning == "spade" else "no",
    )
    model_dir = train(cfg, tmp_path, images if kind == "image" else None, inst)
    assert model_dir == tmp_path / "model"
    assert (tmp_path / "config.yaml").is_file()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    ck = tmp_path / "checkpoints" / "step_0000004"
    names = {p.name for p in ck.iterdir()}
    assert {"model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json"} <= names
    with (tmp_path / "train_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert any((tmp_path / "tb").iterdir())
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        "step_0000002.png",
        "step_0000004.png",
    ]
    _model, loaded_cfg = load_model(tmp_path)
    assert loaded_cfg == cfg
    _assert_same_weights(
        _weights(model_dir / "model.safetensors"), _weights(ck / "ema.safetensors")
    )


def test_resume_is_exact(tmp_path, make_config, toy_patches):
    images, inst = toy_patches
    cfg = make_config(
        "image", "spade", steps=6, checkpoint_every=3, sample_every=0, cond_drop_prob=0.5
    )
    train(cfg, tmp_path / "a", images, inst)
    train(cfg, tmp_path / "b", images, inst, stop_at_step=3)
    assert [s for s, _ in list_checkpoints(tmp_path / "b")] == [3]
    # a save killed half-way: a temporary folder of a later step and a folder without state.json
    fake = tmp_path / "b" / "checkpoints" / ".tmp-step_0000005-x"
    fake.mkdir()
    (fake / "state.json").write_text('{"step": 5}')
    (tmp_path / "b" / "checkpoints" / "step_0000009").mkdir()
    train(cfg, tmp_path / "b", images, inst, resume=True)
    assert not fake.exists()
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        _assert_same_weights(
            _weights(tmp_path / "a/checkpoints/step_0000006" / name),
            _weights(tmp_path / "b/checkpoints/step_0000006" / name),
            atol=1e-6,
        )

    def losses(run):
        with (tmp_path / run / "train_log.csv").open() as f:
            return [float(r["loss"]) for r in csv.DictReader(f)]

    assert losses("b") == pytest.approx(losses("a"), abs=1e-6)


def test_keep_checkpoints_and_no_silent_overwrite(tmp_path, make_config, toy_patches):
    _, inst = toy_patches
    cfg = make_config("structure", steps=5, checkpoint_every=1, keep_checkpoints=2, sample_every=0)
    train(cfg, tmp_path, None, inst)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    with pytest.raises(NudiffError, match="resume"):
        train(cfg, tmp_path, None, inst)
    # resuming a finished run does no step and keeps the final model
    train(cfg, tmp_path, None, inst, resume=True)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    from dataclasses import replace

    # a speed option of the model may change on resume; its shape may not
    train(
        replace(cfg, model=replace(cfg.model, flash_attention=True)),
        tmp_path,
        None,
        inst,
        resume=True,
    )
    with pytest.raises(NudiffError, match="another model config"):
        train(
            replace(cfg, model=replace(cfg.model, num_res_blocks=2)),
            tmp_path,
            None,
            inst,
            resume=True,
        )


def test_warmup_cosine(make_config):
    tc = make_config(steps=10, warmup_steps=2).train
    f = warmup_cosine(tc.steps, tc.warmup_steps)
    assert [f(0), f(1), f(2)] == [0.5, 1.0, 1.0]
    assert f(6) == pytest.approx(0.5)
    assert f(10) == pytest.approx(0.0, abs=1e-12)


def test_warmup_cosine_ends_at_the_time_budget(make_config):
    tc = make_config(steps=100, warmup_steps=2, max_minutes=1.0).train
    clock = WallClock(tc.max_minutes)
    f = warmup_cosine(tc.steps, tc.warmup_steps, progress=clock.fraction)
    assert f(10) == pytest.approx(
        warmup_cosine(tc.steps, tc.warmup_steps)(10), abs=1e-3
    )  # no time spent yet: by steps
    clock.before_s = (
        30.0  # half the budget spent: the schedule is half-way although step 10 is not
    )
    assert f(10) == pytest.approx(0.5, abs=1e-3)
    clock.before_s = 60.0
    assert clock.up() and f(10) == pytest.approx(0.0, abs=1e-9)
    assert not WallClock(None).up() and WallClock(None).fraction() == 0.0


def test_time_budget_stops_training_with_a_model_and_resumes_its_clock(
    tmp_path, make_config, toy_patches
):
    _, inst = toy_patches
    cfg = make_config(steps=10_000, checkpoint_every=10_000, sample_every=0, max_minutes=0.5 / 60)
    train(cfg, tmp_path, None, inst)
    with (tmp_path / "train_log.csv").open() as f:
        last = int(list(csv.DictReader(f))[-1]["step"])
    assert 1 <= last < 10_000 and (tmp_path / "model").is_dir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [last]  # the last step is saved
    state = __import__("json").loads((list_checkpoints(tmp_path)[0][1] / "state.json").read_text())
    assert state["elapsed_s"] >= 0.5
    # resumed, the spent budget counts: no step, the model stays
    train(cfg, tmp_path, None, inst, resume=True)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [last] and (tmp_path / "model").is_dir()


def test_window_workers_train_the_same_model(tmp_path, make_config, toy_patches):
    images, inst = toy_patches
    for workers in (0, 2):
        cfg = make_config("image", "spade", steps=3, sample_every=0, num_workers=workers)
        train(cfg, tmp_path / str(workers), images, inst)
    _assert_same_weights(
        _weights(tmp_path / "0" / "model" / "model.safetensors"),
        _weights(tmp_path / "2" / "model" / "model.safetensors"),
    )


def test_compile_compiles_the_trained_net_in_place(
    tmp_path, make_config, toy_patches, monkeypatch
):
    # torch.compile itself costs ~2 min for a tiny U-Net on this CPU: its call is recorded, not
    # run (compiled in place, the same net gave the same output and state-dict keys)
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: calls.append((self, kw)))
    images, inst = toy_patches
    cfg = make_config("image", "spade", steps=2, sample_every=0, compile="reduce-overhead")
    train(cfg, tmp_path, images, inst)
    assert [kw for _, kw in calls] == [{"mode": "reduce-overhead"}]
    assert "UNet" in type(calls[0][0]).__name__  # the net the optimizer trains, once
    assert (tmp_path / "model" / "model.safetensors").is_file()
    with pytest.raises(NudiffError, match="train.compile"):
        make_config("image", "spade", compile="fast")


def test_image_model_needs_images(tmp_path, make_config, toy_patches):
    _, inst = toy_patches
    with pytest.raises(Exception, match="images"):
        train(make_config("image"), tmp_path, None, inst)


def test_v_prediction_trains_on_its_own_target(tmp_path, make_config, toy_patches):
    from dataclasses import replace

    images, inst = toy_patches
    eps_cfg = make_config("image", "spade", steps=2, sample_every=0)
    v_cfg = replace(eps_cfg, prediction_type="v_prediction", zero_terminal_snr=True)
    first_loss = {}
    for name, cfg in (("eps", eps_cfg), ("v", v_cfg)):
        train(cfg, tmp_path / name, images, inst)
        with (tmp_path / name / "train_log.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert all(np.isfinite(float(r["loss"])) for r in rows)
        first_loss[name] = float(rows[0]["loss"])
    # same seed, weights, windows, t and noise: only the regression target differs
    assert first_loss["v"] != pytest.approx(first_loss["eps"], rel=1e-3)
    _model, loaded = load_model(tmp_path / "v")
    assert loaded.prediction_type == "v_prediction" and loaded.zero_terminal_snr


def test_self_conditioned_model_trains_and_samples(tmp_path, make_config, toy_patches):
    """A self-conditioned structure model has 3 more input channels, trains (the feedback pass
    included: 8 steps draw it with probability 1/2 each) and samples; its output depends on the
    estimate fed back."""
    from dataclasses import replace

    from nudiff.diffusion.sample import sample_structures

    _images, inst = toy_patches
    base = make_config("structure", steps=8, sample_every=0)
    cfg = replace(base, model=replace(base.model, self_condition=True))
    train(cfg, tmp_path, None, inst)
    model, loaded = load_model(tmp_path)
    assert loaded.model.self_condition
    assert model.net.conv_in.conv.in_channels == 6
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([500, 500])
    with torch.no_grad():
        a = model(x, t, None, None)
        b = model(x, t, None, torch.ones_like(x))
    assert not torch.allclose(a, b)
    s = sample_structures(model, 2, seed=0, sampler="dpmsolver++", steps=4, progress=False)
    assert s.shape == (2, 3, 16, 16) and np.isfinite(s).all()


def test_min_snr_weights_change_the_loss(tmp_path, make_config, toy_patches):
    from nudiff.diffusion.schedule import min_snr_weights, training_scheduler

    ab = training_scheduler(make_config()).alphas_cumprod
    t = torch.tensor([0, 500, 999])
    w = min_snr_weights(t, ab, 5.0, "epsilon")
    snr = ab[t] / (1 - ab[t])
    assert float(w[0]) == pytest.approx(5.0 / float(snr[0]), rel=1e-4)  # low noise: down-weighted
    assert float(w[2]) == pytest.approx(1.0)  # SNR < gamma: weight 1 for eps
    wv = min_snr_weights(t, ab, 5.0, "v_prediction")
    assert float(wv[2]) == pytest.approx(float(snr[2] / (snr[2] + 1)), rel=1e-4)
    _images, inst = toy_patches
    losses = {}
    for gamma in (None, 5.0):
        train(
            make_config("structure", steps=2, sample_every=0, min_snr_gamma=gamma),
            tmp_path / str(gamma),
            None,
            inst,
        )
        with (tmp_path / str(gamma) / "train_log.csv").open() as f:
            losses[gamma] = float(next(csv.DictReader(f))["loss"])
    assert losses[5.0] != pytest.approx(losses[None], rel=1e-3)


def test_predicted_x0_inverts_the_forward_process(make_config):
    from dataclasses import replace

    from nudiff.diffusion.schedule import predicted_x0, training_scheduler

    for pred in ("epsilon", "v_prediction"):
        sched = training_scheduler(replace(make_config(), prediction_type=pred))
        x0, noise, t = (
            torch.rand(3, 3, 8, 8) * 2 - 1,
            torch.randn(3, 3, 8, 8),
            torch.tensor([1, 400, 990]),
        )
        xt = sched.add_noise(x0, noise, t)
        out = noise if pred == "epsilon" else sched.get_velocity(x0, noise, t)
        assert torch.allclose(predicted_x0(out, xt, t, sched.alphas_cumprod, pred), x0, atol=2e-3)


def test_fine_tuning_starts_from_the_given_model_and_refuses_another_network(
    tmp_path, make_config, toy_patches
):
    """train.init_from: the first step starts from that model's weights (its first logged loss
    is the one the model itself gives, not a fresh network's); another width or scale is one
    line naming the folder; a resumed fine-tuning continues from its checkpoint."""
    import dataclasses

    from nudiff.utils import DataError

    images, inst = toy_patches
    base = make_config("image", "spade", steps=6, checkpoint_every=3, sample_every=0)
    trained = train(base, tmp_path / "base", images, inst)
    tune = dataclasses.replace(
        base, train=dataclasses.replace(base.train, steps=3, init_from=str(trained))
    )
    before = _weights(trained / "model.safetensors")
    # with lr 0 the fine-tuned model is the one it started from (EMA of constant weights)
    frozen = dataclasses.replace(tune, train=dataclasses.replace(tune.train, lr=0.0))
    _assert_same_weights(
        _weights(train(frozen, tmp_path / "frozen", images, inst) / "model.safetensors"), before
    )
    scratch = dataclasses.replace(frozen, train=dataclasses.replace(frozen.train, init_from=None))
    fresh = _weights(train(scratch, tmp_path / "scratch", images, inst) / "model.safetensors")
    assert any(not torch.equal(fresh[k], before[k]) for k in before)

    train(tune, tmp_path / "a", images, inst)  # straight, and stopped then resumed: the same
    train(tune, tmp_path / "b", images, inst, stop_at_step=2)
    train(tune, tmp_path / "b", images, inst, resume=True)
    _assert_same_weights(
        _weights(tmp_path / "a/model/model.safetensors"),
        _weights(tmp_path / "b/model/model.safetensors"),
        atol=1e-6,
    )

    wide = make_config("image", "spade", steps=2, sample_every=0)
    wide = dataclasses.replace(
        wide,
        data=dataclasses.replace(wide.data, scale=1.0),
        train=dataclasses.replace(wide.train, init_from=str(trained)),
    )
    with pytest.raises(DataError, match=r"cannot fine-tune from it: its data.scale differ") as e:
        train(wide, tmp_path / "wide", images, inst)
    assert str(trained) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "wide").exists()
