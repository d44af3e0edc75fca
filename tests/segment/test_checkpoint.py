import torch

from nudiff import checkpoint as shared
from nudiff.segment import checkpoint as ckpt


def _trained_pair():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        model(torch.rand(2, 3, 8, 8)).square().mean().backward()
        opt.step()
    return model, opt


def test_optimizer_flat_round_trip():
    _, opt = _trained_pair()
    tensors, meta = shared.flatten_optimizer(opt.state_dict())
    back = shared.unflatten_optimizer(tensors, meta)
    ref = opt.state_dict()
    assert back["param_groups"] == ref["param_groups"]
    for pid, entry in ref["state"].items():
        for k, v in entry.items():
            assert torch.equal(back["state"][pid][k], v)


def test_save_load_prune(tmp_path):
    model, opt = _trained_pair()
    torch.manual_seed(5)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(
            tmp_path, step, model, opt, {"note": step, "torch_rng": ckpt.torch_rng_to_json()}
        )
    shared.prune(tmp_path, 2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    model2, opt2 = _trained_pair()
    with torch.no_grad():
        for p in model2.parameters():
            p.zero_()
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "step_0000003", model2, opt2)
    assert state["step"] == 3 and state["note"] == 3
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values())
    )
    ckpt.torch_rng_from_json(state["torch_rng"])
    restored = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(restored, torch.rand(3))
