"""Session fixtures of the quality tests: tiny H&E-like folders, a tiny real-trained segmenter."""

from pathlib import Path

import pytest
import torch
from quality.quality_fixtures import colour_shift, he_pair, tiny_segment_config, write_folder


@pytest.fixture(scope="session")
def quality_data(tmp_path_factory) -> dict[str, Path]:
    """Folders: real (16 x 128 px), synthetic (24 x 64 px, same generator), and two corrupted
    copies of synthetic: shuffled labels, colour-shifted images."""
    root = tmp_path_factory.mktemp("quality")
    syn = [he_pair(1000 + i) for i in range(24)]
    return {
        "real": write_folder(root / "real", [he_pair(i, size=128, n=24) for i in range(16)], "r"),
        "synthetic": write_folder(root / "syn", syn),
        "shuffled": write_folder(
            root / "shuffled", [(s[0], syn[(i + 1) % len(syn)][1]) for i, s in enumerate(syn)]
        ),
        "shifted": write_folder(root / "shifted", [(colour_shift(s[0]), s[1]) for s in syn]),
    }


@pytest.fixture(scope="session")
def segmenter_run(tmp_path_factory, quality_data) -> Path:
    """A tiny segmenter trained on the real folder (50 steps, ~10 s)."""
    from nudiff.data.dataset import load_folder
    from nudiff.segment.train import train_segmenter

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        real = load_folder(quality_data["real"], progress=False)
        run = tmp_path_factory.mktemp("seg") / "run"
        train_segmenter(tiny_segment_config(50), run, real, None, real[:2], progress=False)
    finally:
        torch.set_num_threads(n)
    return run


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
