"""nudiff.config: strict loading, and the one "same configuration?" rule."""

from dataclasses import dataclass, field

import pytest

from nudiff.config import BOOKKEEPING, SPEED_ONLY, differences, from_dict
from nudiff.diffusion.config import DiffusionConfig, SampleConfig
from nudiff.experiment.fingerprint import decisive
from nudiff.utils import DataError


@dataclass
class Inner:
    width: int = 8
    threads: int = field(default=1, metadata=SPEED_ONLY)
    log_every: int = field(default=10, metadata=BOOKKEEPING)


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)
    new_option: float | None = None

    @staticmethod
    def upgrade_keys(data: dict, where: str) -> dict:
        if "old_sizes" in data:
            data["sizes"] = data.pop("old_sizes")
        return data

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ValueError("sizes must not be empty")


def test_differences_field_by_field_without_speed_only_fields():
    assert differences(Outer(), Outer(inner=Inner(threads=4, log_every=1))) == []
    assert differences(Outer(), Outer(inner=Inner(width=16), new_option=1.0)) == [
        "inner.width",
        "new_option",
    ]
    assert (
        differences(Outer(sizes=(1, 2)), from_dict(Outer, {"sizes": [1, 2]})) == []
    )  # as written back
    assert differences(SampleConfig(batch_size=64), SampleConfig()) == []
    a, b = DiffusionConfig(), DiffusionConfig()
    b.model.flash_attention, b.train.num_workers, b.train.compile = True, 4, "default"
    assert differences(a, b) == []
    b.train.steps += 1
    assert differences(a, b) == ["train.steps"]


def test_from_dict_upgrades_old_keys_and_reports_refused_values():
    assert from_dict(Outer, {"old_sizes": [3]}).sizes == (3,)
    with pytest.raises(DataError, match="old.yaml: sizes must not be empty"):
        from_dict(Outer, {"sizes": []}, "old.yaml")
    with pytest.raises(DataError, match="unknown key"):
        from_dict(Outer, {"size": [3]})


def test_fingerprints_hash_what_decides_a_result_where_it_differs_from_its_default():
    assert decisive(Outer()) == {}  # all defaults: a new option at its default moves nothing
    assert decisive(Outer(new_option=0.5)) == {"new_option": 0.5}
    assert decisive(Outer(inner=Inner(width=4, threads=2, log_every=1))) == {"inner": {"width": 4}}
    assert decisive(Outer(sizes=[1, 2])) == {}  # as written back from YAML
    assert decisive(Outer(sizes=(3,))) == {"sizes": [3]}


def test_a_deprecation_warning_is_printed_once(capsys):
    from nudiff.config import warn_deprecated

    warn_deprecated.cache_clear()
    for _ in range(3):
        warn_deprecated("`old.key` is deprecated; use `new.key` (removed in 0.2)")
    warn_deprecated("another one")
    assert capsys.readouterr().err.count("nudiff: warning:") == 2
