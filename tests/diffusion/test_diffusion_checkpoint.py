import random

import numpy as np
import torch

from nudiff.checkpoint import (
    flatten_optimizer,
    list_checkpoints,
    prune,
    rng_state,
    set_rng_state,
    unflatten_optimizer,
    write_checkpoint,
)


def test_optimizer_roundtrip():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer(opt.state_dict())
    assert all(torch.is_tensor(v) for v in tensors.values())
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    opt2.load_state_dict(unflatten_optimizer(tensors, meta))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for k, v in a["state"][pid].items():
            assert torch.equal(v, b["state"][pid][k])


def test_rng_roundtrip():
    state = rng_state()
    x = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == x


def test_write_list_prune(tmp_path):
    for step in (1, 2, 3):
        write_checkpoint(
            tmp_path,
            step,
            {"w.safetensors": {"x": torch.ones(2) * step}, "state.json": {"step": step}},
        )
    (tmp_path / "checkpoints" / ".tmp-step_0000004-abc").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 2, 3]
    prune(tmp_path, 2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]


def test_crash_during_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    import nudiff.checkpoint as ck

    write_checkpoint(tmp_path, 1, {"state.json": {"step": 1}})
    real = ck.save_file
    calls = []

    def crash_on_second(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real(tensors, path)

    monkeypatch.setattr(ck, "save_file", crash_on_second)
    files = {"a.safetensors": {"x": torch.ones(1)}, "b.safetensors": {"x": torch.ones(1)}}
    try:
        write_checkpoint(tmp_path, 2, {**files, "state.json": {"step": 2}})
    except KeyboardInterrupt:
        pass
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000001"]
