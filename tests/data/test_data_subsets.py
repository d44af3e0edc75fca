import numpy as np
import pytest

from nudiff.data.subsets import (
    FEATURE_NAMES,
    STRATEGIES,
    choose_subset,
    patch_features,
    subset_summary,
)


def fake_pool(n_patches=80, n_images=4, ids_per_image=60, seed=0):
    """Manifest-like patches: each holds a random handful of its image's nuclei ids."""
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(n_patches):
        image = f"img{i % n_images}"
        ids = sorted(
            rng.choice(np.arange(1, ids_per_image + 1), rng.integers(0, 12), replace=False)
        )
        pool.append({"name": f"p{i:03d}", "source": "train", "image": image, "source_ids": ids})
    features = rng.normal(size=(n_patches, len(FEATURE_NAMES)))
    return pool, features


@pytest.mark.parametrize("strategy", ["random", "kmeans"])
@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5])
def test_fraction_reached_minimally_and_deterministic(strategy, fraction):
    pool, feats = fake_pool()
    names = choose_subset(pool, fraction, strategy, seed=1, features=feats)
    assert names == choose_subset(pool, fraction, strategy, seed=1, features=feats)
    summary = subset_summary(pool, names)
    assert summary["achieved_fraction"] >= fraction
    assert summary["n_patches"] == len(names) < len(pool)
    assert names == [p["name"] for p in pool if p["name"] in set(names)]  # manifest order


def test_random_differs_between_seeds():
    pool, _ = fake_pool()
    assert choose_subset(pool, 0.2, "random", seed=0) != choose_subset(pool, 0.2, "random", seed=1)


def test_kmeans_round_robin_covers_every_cluster():
    pool = [
        {
            "name": f"p{i:03d}",
            "source": "s",
            "image": "a",
            "source_ids": list(range(5 * i + 1, 5 * i + 6)),
        }
        for i in range(60)
    ]
    # six well-separated groups of patches; the first six picks take one from each
    feats = np.repeat(np.eye(6, len(FEATURE_NAMES)) * 50, 10, axis=0)
    feats += np.random.default_rng(0).normal(size=feats.shape)
    names = choose_subset(pool, 0.1, "kmeans", seed=3, features=feats)
    assert len(names) == 6 and {int(n[1:]) // 10 for n in names} == set(range(6))


def test_full_fraction_is_all_patches_and_bad_args():
    pool, _ = fake_pool(n_patches=10)
    assert choose_subset(pool, 1.0, "kmeans") == [p["name"] for p in pool]
    with pytest.raises(ValueError):
        choose_subset(pool, 0.0)
    with pytest.raises(ValueError, match="unknown subset strategy"):
        choose_subset(pool, 0.5, "nope")


def test_strategy_registry_is_pluggable(monkeypatch):
    pool, _ = fake_pool(n_patches=20)
    monkeypatch.setitem(
        STRATEGIES, "first", lambda patches, rng, features, **_: list(range(len(patches)))
    )
    names = choose_subset(pool, 0.3, "first")
    assert names == [p["name"] for p in pool[: len(names)]]


def test_patch_features(toy_instance_map):
    image = np.full(toy_instance_map.shape + (3,), 200, np.uint8)
    image[toy_instance_map > 0] = (90, 40, 150)
    f = patch_features(image, toy_instance_map)
    assert f.shape == (len(FEATURE_NAMES),) and np.isfinite(f).all()
    assert f[FEATURE_NAMES.index("n_nuclei")] == 3
    assert 0 < f[FEATURE_NAMES.index("foreground_fraction")] < 1
