"""Tiny fixtures shared by tests (importable: tests/ is on pythonpath)."""

import numpy as np


def disk_instance_map(
    shape=(64, 64), centers=((20, 20), (20, 34), (45, 40)), radius=8
) -> np.ndarray:
    """Touching discs: a tiny, hand-checkable instance map."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centers, start=1):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return inst
