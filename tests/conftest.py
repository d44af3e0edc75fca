import os
from pathlib import Path

import numpy as np
import pytest

MONUSEG = Path(os.environ.get("NUDIFF_MONUSEG", Path(__file__).resolve().parents[2] / "shared/datasets/monuseg"))


@pytest.fixture
def monuseg() -> Path:
    if not (MONUSEG / "train").is_dir():
        pytest.skip("MoNuSeg data not available at ../shared/datasets/monuseg")
    return MONUSEG


def disk_instance_map(shape=(64, 64), centers=((20, 20), (20, 34), (45, 40)), radius=8) -> np.ndarray:
    """Touching discs: a tiny, hand-checkable instance map."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centers, start=1):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return inst


@pytest.fixture
def toy_instance_map() -> np.ndarray:
    return disk_instance_map()
