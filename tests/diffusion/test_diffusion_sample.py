import numpy as np
import pytest
import torch

from nudiff.diffusion.networks import condition_tensor, save_denoiser
from nudiff.diffusion.sample import guided_eps, sample_images, sample_structures
from nudiff.structure import encode


@pytest.fixture
def structure_model(make_config, make_denoiser):
    return make_denoiser(make_config("structure"))


@pytest.fixture
def image_model(make_config, make_denoiser):
    return make_denoiser(make_config("image", "spade"))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmsolver++"])
def test_samplers_shapes_and_ranges(structure_model, image_model, sampler):
    s = sample_structures(
        structure_model, 3, seed=1, sampler=sampler, steps=4, batch_size=2, progress=False
    )
    assert s.shape == (3, 3, 16, 16) and s.dtype == np.float32
    assert s[:, 0].min() >= 0 and s[:, 0].max() <= 1
    assert s[:, 1:].min() >= -1 and s[:, 1:].max() <= 1
    im = sample_images(
        image_model,
        s,
        seed=1,
        sampler=sampler,
        steps=4,
        guidance_scale=2.0,
        batch_size=2,
        progress=False,
    )
    assert im.shape == (3, 16, 16, 3) and im.dtype == np.uint8


def test_determinism_and_batch_independence(structure_model):
    kw = {"sampler": "ddpm", "steps": 5, "progress": False}
    a = sample_structures(structure_model, 3, seed=7, batch_size=3, **kw)
    b = sample_structures(structure_model, 3, seed=7, batch_size=3, **kw)
    c = sample_structures(structure_model, 3, seed=7, batch_size=1, **kw)
    d = sample_structures(structure_model, 2, seed=7, batch_size=2, first_index=1, **kw)
    e = sample_structures(structure_model, 3, seed=8, batch_size=3, **kw)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-4)
    np.testing.assert_allclose(a[1:], d, atol=1e-4)
    assert not np.allclose(a, e)


def test_image_sampling_determinism(image_model, toy_patches):
    _, inst = toy_patches
    s = np.stack([encode(m[:16, :16]) for m in inst[:3]])
    kw = {"sampler": "ddpm", "steps": 4, "guidance_scale": 2.0, "progress": False}
    a = sample_images(image_model, s, seed=3, batch_size=3, **kw)
    b = sample_images(image_model, s, seed=3, batch_size=1, **kw)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # uint8 rounding of float noise


def test_guidance_scale(image_model):
    torch.manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([900, 10])
    cond = condition_tensor(torch.rand(2, 3, 16, 16))
    calls = []
    handle = image_model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    eps_c = image_model(x, t, cond)
    calls.clear()
    assert torch.equal(guided_eps(image_model, x, t, cond, 1.0), eps_c)
    assert calls == [2]  # guidance 1: one conditional pass, no null pass
    eps_u = image_model(x, t, None)
    torch.testing.assert_close(guided_eps(image_model, x, t, cond, 0.0), eps_u, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        guided_eps(image_model, x, t, cond, 3.0), eps_u + 3.0 * (eps_c - eps_u), atol=1e-5, rtol=0
    )
    handle.remove()


def test_sample_from_model_folder(tmp_path, structure_model):
    save_denoiser(structure_model, tmp_path / "model")
    kw = {"seed": 0, "sampler": "ddim", "steps": 3, "batch_size": 2, "progress": False}
    a = sample_structures(tmp_path, 2, **kw)
    b = sample_structures(structure_model, 2, **kw)
    assert np.array_equal(a, b)
    with pytest.raises(Exception, match="image model"):
        sample_images(tmp_path, a, progress=False)


def test_bf16_autocast_sampling(structure_model, image_model):
    s = sample_structures(
        structure_model,
        2,
        seed=0,
        sampler="dpmsolver++",
        steps=3,
        precision="bf16",
        progress=False,
    )
    assert s.dtype == np.float32 and s[:, 0].min() >= 0 and np.abs(s[:, 1:]).max() <= 1
    im = sample_images(image_model, s, seed=0, steps=3, precision="bf16", progress=False)
    assert im.shape == (2, 16, 16, 3)


def test_zero_terminal_snr_with_v_prediction(make_config, make_denoiser):
    """The rescaled schedule ends in pure noise; every sampler runs with a v-prediction model;
    epsilon prediction at zero SNR is refused."""
    from dataclasses import replace

    from nudiff.diffusion.config import DiffusionConfig
    from nudiff.diffusion.schedule import make_scheduler, training_scheduler
    from nudiff.utils import NudiffError

    cfg = replace(
        make_config("image", "spade"), prediction_type="v_prediction", zero_terminal_snr=True
    )
    assert float(training_scheduler(cfg).alphas_cumprod[-1]) < 1e-6
    assert (
        float(training_scheduler(make_config("image")).alphas_cumprod[-1]) > 1e-5
    )  # DDPM's: not zero
    model = make_denoiser(cfg)
    s = np.stack([encode(np.pad(np.ones((6, 6), np.int32), 5))] * 2)
    for sampler in ("ddpm", "ddim", "dpmsolver++"):
        assert make_scheduler(cfg, sampler).config.prediction_type == "v_prediction"
        im = sample_images(
            model, s, seed=0, sampler=sampler, steps=4, guidance_scale=2.0, progress=False
        )
        assert im.shape == (2, 16, 16, 3)
    with pytest.raises(NudiffError, match="zero_terminal_snr needs"):
        DiffusionConfig(zero_terminal_snr=True)
    with pytest.raises(NudiffError, match="prediction_type"):
        DiffusionConfig(prediction_type="sample")


def test_load_model_goes_to_the_default_device(tmp_path, structure_model, monkeypatch):
    """Synthesis loads its models with load_model and hands them to the samplers: they must be
    on the GPU when there is one (they were left on the CPU, and sampled there, on a GPU
    machine)."""
    import nudiff.diffusion.sample as sample

    save_denoiser(structure_model, tmp_path / "model")
    monkeypatch.setattr(sample, "default_device", lambda: torch.device("meta"))
    model, _ = sample.load_model(tmp_path)
    assert next(model.parameters()).device.type == "meta" and not model.training
    model, _ = sample.load_model(tmp_path, "cpu")
    assert next(model.parameters()).device.type == "cpu"
