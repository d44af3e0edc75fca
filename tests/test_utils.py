import io
import platform
import sys

import pytest
import torch

from nudiff import utils
from nudiff.utils import native_bf16, progress_bar


def test_progress_redraws_rarely_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # like a nohup log
    out = io.StringIO()
    with progress_bar(total=1000, file=out) as bar:
        for _ in range(1000):
            bar.update(1)
    assert bar.mininterval == 30.0
    assert out.getvalue().count("\r") < 5  # tqdm's default would redraw many times
    with progress_bar(total=1, mininterval=0.5, file=out) as bar:
        assert bar.mininterval == 0.5  # an explicit choice wins


def test_atomic_files_get_a_normal_mode(tmp_path):
    import os
    import stat

    from nudiff.utils import write_text

    write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask


def _cpu_flags() -> set[str] | None:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    return set(lines[0].split(":", 1)[1].split()) if lines else None


def test_native_bf16_follows_the_cpu_flags():
    flags = _cpu_flags()
    if flags is None or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs Linux on x86")
    assert native_bf16("cpu") == bool(flags & {"avx512_bf16", "amx_tile"})


def test_bf16_on_a_cpu_that_emulates_it_runs_in_fp32_and_says_so_once(monkeypatch, capsys):
    utils._warn_emulated_bf16.cache_clear()
    monkeypatch.setattr(utils, "native_bf16", lambda device: False)
    assert utils.resolve_precision("bf16", "cpu") == "no"
    assert utils.resolve_precision("bf16", "cpu") == "no"
    assert utils.resolve_precision("fp16", "cpu") == "fp16"  # asked for explicitly: kept
    assert utils.resolve_precision("no", "cpu") == "no"
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "fp32" in err and "cpu" in err
    assert utils.make_accelerator("bf16").mixed_precision == "no"
    with utils.autocast("cpu", "bf16"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32

    monkeypatch.setattr(utils, "native_bf16", lambda device: True)
    assert utils.resolve_precision("bf16", "cpu") == "bf16"
    assert utils.make_accelerator("bf16").mixed_precision == "bf16"
    with utils.autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    utils._warn_emulated_bf16.cache_clear()


def test_module_doc_reads_a_docstring_without_importing():
    import inspect

    from nudiff.utils import module_doc

    doc = module_doc("nudiff.synthesis.pipeline")
    import nudiff.synthesis.pipeline as pipeline

    assert doc and doc == inspect.getdoc(pipeline)
    assert module_doc("nudiff.no_such_module") is None
