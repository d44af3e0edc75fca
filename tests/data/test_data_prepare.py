import numpy as np
import pytest

from nudiff.data.prepare import (
    PrepareConfig,
    choose_validation,
    load_subset,
    load_val,
    prepare,
)
from nudiff.utils import DataError, read_json

CFG = {"val_images": 1, "patch_size": 64, "stride": 48, "fractions": [0.3, 1.0]}


@pytest.fixture
def two_folders(tmp_path, make_folder):
    exact = make_folder(tmp_path / "train", ["e1", "e2", "e3"], shape=(120, 100), seed=1)
    recovered = make_folder(tmp_path / "recovered", ["r1", "r2"], shape=(100, 100), seed=2)
    return exact, recovered


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_prepare_layout_and_idempotence(tmp_path, two_folders):
    exact, recovered = two_folders
    out = tmp_path / "out"
    m = prepare([exact, recovered], out, PrepareConfig(**CFG), progress=False)
    (val,) = m["val"]
    assert val in {"e1", "e2", "e3"}
    assert sorted(m["pool"] + m["val"]) == ["e1", "e2", "e3", "r1", "r2"]
    assert m["sources"]["r1"] == str(recovered.resolve())
    assert (out / "val/images" / f"{val}.png").is_file()
    assert (out / "val/labels" / f"{val}.png").is_file()
    patches = read_json(out / "patches/manifest.json")["patches"]
    # 120 x 100 images: y origins 0, 48, 56 and x 0, 36; 100 x 100: 0, 36 both ways
    assert m["patches"]["n_patches"] == len(patches) == 2 * (3 * 2) + 2 * (2 * 2)
    assert {p["image"] for p in patches} == set(m["pool"])
    assert sorted(m["subsets"]) == ["frac0.30_seed0.json", "frac1.00_seed0.json"]
    sub = read_json(out / "subsets/frac0.30_seed0.json")
    assert sub["achieved_fraction"] >= 0.3
    assert sub["n_patches"] == len(sub["patches"]) < len(patches)
    assert sub["n_source_images"] >= 1 and sub["strategy"] == "kmeans" and sub["seed"] == 0
    assert read_json(out / "manifest.json") == m

    before = snapshot(out)
    prepare([exact, recovered], out, PrepareConfig(**CFG), progress=False)
    assert snapshot(out) == before

    m2 = prepare([exact, recovered], out, PrepareConfig(**CFG, seed=1), progress=False)
    assert sorted(m2["subsets"]) == [
        "frac0.30_seed0.json", "frac0.30_seed1.json", "frac1.00_seed0.json", "frac1.00_seed1.json"
    ]  # fmt: skip
    assert m2["val"] == m["val"]

    samples = load_subset(out, 0.3, seed=0)
    assert [s.name for s in samples] == sub["patches"]
    assert samples[0].image.shape == (64, 64, 3) and samples[0].instance_map.dtype == np.int32
    (v,) = load_val(out)
    assert v.name == val and v.source == str(exact.resolve()) and v.image.shape == (120, 100, 3)
    with pytest.raises(DataError, match="available"):
        load_subset(out, 0.7, seed=0)


def test_changed_pool_drops_old_subsets(tmp_path, two_folders):
    exact, recovered = two_folders
    out = tmp_path / "out"
    prepare([exact, recovered], out, PrepareConfig(**CFG), progress=False)
    cfg = PrepareConfig(**{**CFG, "val_images": 2, "seed": 5})
    m = prepare([exact, recovered], out, cfg, progress=False)
    assert sorted(m["subsets"]) == ["frac0.30_seed5.json", "frac1.00_seed5.json"]
    assert sorted(p.name for p in (out / "subsets").iterdir()) == sorted(m["subsets"])
    assert len(list((out / "val/images").iterdir())) == 2


def test_choose_validation_from_first_folder_deterministic(tmp_path, two_folders):
    from nudiff.data.dataset import load_folders

    samples = load_folders(two_folders, progress=False)
    a = choose_validation(samples, 2, seed=0)
    assert a == choose_validation(samples, 2, seed=0) and set(a) <= {"e1", "e2", "e3"}
    with pytest.raises(DataError, match="cannot hold out 4"):
        choose_validation(samples, 4)


def test_prepare_reports_bad_folder(tmp_path, two_folders):
    exact, recovered = two_folders
    (recovered / "labels" / "r2.png").unlink()
    with pytest.raises(DataError, match="r2.png: no label"):
        prepare([exact, recovered], tmp_path / "out", PrepareConfig(**CFG), progress=False)


def test_prepare_two_real_images(tmp_path, monuseg):
    folder = tmp_path / "real"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
        for src in sorted((monuseg / "train" / sub).iterdir())[:2]:
            (folder / sub / src.name).symlink_to(src)
    cfg = PrepareConfig(val_images=1, fractions=[0.1, 1.0])
    m = prepare([folder], tmp_path / "out", cfg, progress=False)
    assert m["patches"]["n_patches"] == 49
    sub = read_json(tmp_path / "out/subsets/frac0.10_seed0.json")
    assert 0.1 <= sub["achieved_fraction"] < 0.3 and 1 <= sub["n_patches"] < 49


def test_prepare_with_split_file(tmp_path, two_folders):
    exact, recovered = two_folders
    split = tmp_path / "split.json"
    split.write_text(
        '{"train": ["e1", "r1"], "test_same": ["e2"], "test_other": ["r2"], "note": "x"}'
    )
    out = tmp_path / "out"
    m = prepare([exact, recovered], out, PrepareConfig(**CFG, split=str(split)), progress=False)
    assert m["val"] == ["e2", "r2"] and sorted(m["pool"]) == ["e1", "r1"]
    assert m["groups"] == {"e2": "test_same", "r2": "test_other"}
    assert {p["image"] for p in read_json(out / "patches/manifest.json")["patches"]} == {
        "e1",
        "r1",
    }
    assert sorted(s.name for s in load_val(out)) == ["e2", "r2"]
    from nudiff.data.prepare import load_groups, split_groups

    assert load_groups(out) == m["groups"] == split_groups(split)  # the report's two sources agree


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"train": ["e1"], "test": ["zz"]}', "not found"),
        ('{"train": ["e1"], "test": ["e1"]}', "more than once"),
        ('{"train": ["e1"]}', "needs a 'train' list"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_split_file_names_the_problem(tmp_path, two_folders, text, problem):
    split = tmp_path / "split.json"
    split.write_text(text)
    with pytest.raises(DataError, match=problem) as e:
        prepare(
            list(two_folders),
            tmp_path / "out",
            PrepareConfig(**CFG, split=str(split)),
            progress=False,
        )
    assert "split.json" in str(e.value) and not (tmp_path / "out" / "manifest.json").exists()
