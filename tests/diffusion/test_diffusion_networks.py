import pytest
import torch

from nudiff.diffusion.networks import (
    Denoiser,
    condition_tensor,
    load_denoiser,
    null_condition,
    save_denoiser,
)


@pytest.mark.parametrize(
    "kind,conditioning", [("structure", "spade"), ("image", "spade"), ("image", "concat")]
)
def test_build_and_forward(kind, conditioning, make_config):
    torch.manual_seed(0)
    model = Denoiser(make_config(kind, conditioning))
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([0, 999])
    cond = condition_tensor(torch.rand(2, 3, 16, 16)) if kind == "image" else None
    eps = model(x, t, cond)
    assert eps.shape == (2, 3, 16, 16) and torch.isfinite(eps).all()
    name = type(model.net).__name__
    assert name == (
        "SPADEDiffusionModelUNet"
        if (kind, conditioning) == ("image", "spade")
        else "DiffusionModelUNet"
    )


def test_condition_null_differs_from_empty_structure():
    empty = torch.zeros(1, 3, 8, 8)
    real = condition_tensor(empty)
    null = condition_tensor(empty, torch.tensor([True]))
    assert real.shape == (1, 4, 8, 8)
    assert torch.all(real[:, 3] == 1) and torch.all(null == 0)
    assert not torch.equal(real, null)
    s = torch.rand(3, 3, 8, 8)
    c = condition_tensor(s, torch.tensor([False, True, False]))
    assert torch.equal(c[0, :3], s[0]) and torch.all(c[1] == 0) and torch.all(c[2, 3] == 1)
    assert torch.equal(null_condition(s), torch.zeros(3, 4, 8, 8))


@pytest.mark.parametrize("conditioning", ["spade", "concat"])
def test_image_model_sees_the_condition(conditioning, make_config, make_denoiser):
    model = make_denoiser(make_config("image", conditioning))
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    empty = condition_tensor(torch.zeros(1, 3, 16, 16))
    assert torch.equal(model(x, t, None), model(x, t, null_condition(x)))
    assert not torch.allclose(model(x, t, None), model(x, t, empty))


def test_save_load_roundtrip(tmp_path, make_config, make_denoiser):
    model = make_denoiser(make_config("image", "spade"))
    save_denoiser(model, tmp_path / "m")
    loaded = load_denoiser(tmp_path / "m")
    assert loaded.config == model.config
    x, t, c = (
        torch.randn(1, 3, 16, 16),
        torch.tensor([10]),
        condition_tensor(torch.rand(1, 3, 16, 16)),
    )
    assert torch.equal(model(x, t, c), loaded(x, t, c))


@pytest.mark.parametrize("kind", ["structure", "image"])
def test_flash_attention_is_the_same_model(kind, make_config):
    """SDPA attention: the same parameters (weights load either way) and the same output."""
    from dataclasses import replace

    torch.manual_seed(0)
    cfg = make_config(kind, "spade")
    plain = Denoiser(cfg).eval()
    flash = Denoiser(replace(cfg, model=replace(cfg.model, flash_attention=True))).eval()
    flash.load_state_dict(plain.state_dict())  # strict: the same keys
    assert any(getattr(m, "use_flash_attention", False) for m in flash.modules())
    assert not any(getattr(m, "use_flash_attention", False) for m in plain.modules())
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    cond = condition_tensor(torch.rand(2, 3, 16, 16)) if kind == "image" else None
    with torch.no_grad():
        assert torch.allclose(plain(x, t, cond), flash(x, t, cond), atol=1e-5)
