import os
from pathlib import Path

import numpy as np
import pytest

from helpers import disk_instance_map

MONUSEG = Path(
    os.environ.get(
        "NUDIFF_MONUSEG", Path(__file__).resolve().parents[2] / "shared/datasets/monuseg"
    )
)


@pytest.fixture
def monuseg() -> Path:
    if not (MONUSEG / "train").is_dir():
        pytest.skip("MoNuSeg data not available at ../shared/datasets/monuseg")
    return MONUSEG


@pytest.fixture
def toy_instance_map() -> np.ndarray:
    return disk_instance_map()
