"""An experiment's cells and where things are: the run folder (``--out``) and the results
folder (``--results``), and the run's log line.

Standard library only, below every stage: the experiment loop, ``--status``, ``nudiff quality``
and the benchmark scripts read runs through it without importing any training code. One paths
object per folder, so that all name a fraction's models or a cell's metrics the same way. A
layout with a relative root (``RunLayout(Path())``) gives paths relative to any run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

try:  # POSIX; elsewhere runs go unlocked (one process per run folder)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class Named(Protocol):
    name: str


Compose = Callable[[list, list | None], tuple[list, list | None]]


def _add(real: list, extra: list | None) -> tuple[list, list | None]:
    return real, extra


def _duplicate(real: list, extra: list | None) -> tuple[list, list | None]:
    # the subset repeated to as many patches as real + extra, and nothing else
    copies = -(-(len(real) + len(extra)) // len(real))
    return (real * copies)[: len(real) + len(extra)], None


def _extra_only(real: list, extra: list | None) -> tuple[list, list | None]:
    return extra, None


@dataclass(frozen=True)
class Arm:
    """What the segmenter of one arm trains on.

    pairs: needs the fraction's synthetic pairs (its diffusion models, synthesis and, with
        ``synthesis.filter.segmenter: real``, the filter's reference cell).
    copypaste: needs the fraction's copy-paste patches.
    compose: ``(real, extra) -> (real-role patches, synthetic-role patches or None)``, where
        ``extra`` is the copy-paste patches then the synthetic pairs the arm needs (``None``
        when it needs neither); the synthetic role is drawn by ``segment.train.real_ratio``.
    versus_copypaste: the report also pairs it against ``real+copypaste`` (does diffusion beat
        copy-paste, with the same real subset and steps?).
    """

    name: str
    pairs: bool = False
    copypaste: bool = False
    compose: Compose = _add
    versus_copypaste: bool = False


ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("real"),
        Arm("real+syn", pairs=True, versus_copypaste=True),
        Arm("real+copypaste", copypaste=True),
        Arm("real+copypaste+syn", pairs=True, copypaste=True, versus_copypaste=True),
        Arm("real-dup", pairs=True, compose=_duplicate),
        Arm("syn-only", pairs=True, compose=_extra_only),
    )
}
# the baselines the report pairs other arms against, and the cell whose segmenter filters pairs
REAL_ARM, COPYPASTE_ARM = "real", "real+copypaste"
# synthesis.filter.segmenter: "real" = the fraction's own real cell (see reference_cell)
REAL_CELL = REAL_ARM

SHIPPED_RECORD = "shipped.json"  # beside a model taken from models/: where it came from


def fraction_tag(fraction: float) -> str:
    """``f0.10``: how a labeled fraction appears in folder, cell and timing names."""
    return f"f{fraction:.2f}"


_CELL_NAME = re.compile(r"f(?P<fraction>\d+\.\d+)_(?P<arm>.+)_s(?P<seed>\d+)")


@dataclass
class Cell:
    fraction: float
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{fraction_tag(self.fraction)}_{self.arm}_s{self.seed}"

    @classmethod
    def from_name(cls, name: str) -> Cell:
        """The cell called ``name`` (``f0.10_real+syn_s0``); an error for another name."""
        m = _CELL_NAME.fullmatch(name)
        if m is None or m["arm"] not in ARMS:
            raise ValueError(f"{name!r}: not a cell name (f<fraction>_<arm>_s<seed>)")
        return cls(float(m["fraction"]), m["arm"], int(m["seed"]))

    @property
    def needs(self) -> Arm:
        """The arm's entry of :data:`ARMS`."""
        return ARMS[self.arm]


def log(msg: str) -> None:
    """A run's progress line, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _name(cell: Named | str) -> str:
    return cell if isinstance(cell, str) else cell.name


@dataclass(frozen=True)
class RunLayout:
    """An experiment's run folder::

    config/<section>.yaml            the plan it ran
    data/                            prepared data (patches, subsets, val)
    diffusion/f0.10/{structure,image}/   the fraction's diffusion model runs (model/ when done)
    diffusion/f0.10/subset/          the labeled subset as a paired folder
    diffusion/f0.10/synthetic/       the fraction's synthetic pairs (+ manifest, mosaic)
    copypaste/f0.10/                 the fraction's copy-paste patches (+ manifest, mosaic)
    cells/f0.10_real+syn_s0/         a cell: model/, pred/, metrics.json
    results.csv, timings.json, report/
    locks/                           who is writing what (several processes, one run)
    """

    root: Path

    def config(self, section: str) -> Path:
        return self.root / "config" / f"{section}.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def diffusion(self, fraction: float) -> Path:
        return self.root / "diffusion" / fraction_tag(fraction)

    def model_run(self, fraction: float, kind: str) -> Path:
        """The run folder of the fraction's ``kind`` (structure | image) model."""
        return self.diffusion(fraction) / kind

    def model(self, fraction: float, kind: str) -> Path:
        """The finished model: it exists only once training has finished."""
        return self.model_run(fraction, kind) / "model"

    def shipped_record(self, fraction: float, kind: str) -> Path:
        """Beside a model taken from ``models/`` (JSON: where it came from)."""
        return self.model_run(fraction, kind) / SHIPPED_RECORD

    def model_sources(self) -> list[str]:
        """One line per finished diffusion model of the run: shipped (from where) or trained
        here."""
        lines = []
        for model in sorted(self.root.glob("diffusion/*/*/model")):
            record = model.parent / SHIPPED_RECORD
            if record.is_file():
                source = f"shipped, {json.loads(record.read_text())['from']}"
            else:
                start = fine_tuned_from(model / "config.yaml")
                source = f"fine-tuned in this run from {start}" if start else "trained in this run"
            lines.append(f"{model.parts[-3]} {model.parts[-2]} model: {source}")
        return lines

    def subset(self, fraction: float) -> Path:
        return self.diffusion(fraction) / "subset"

    def synthetic(self, fraction: float) -> Path:
        return self.diffusion(fraction) / "synthetic"

    def copypaste(self, fraction: float) -> Path:
        return self.root / "copypaste" / fraction_tag(fraction)

    def synthetic_mosaics(self) -> list[Path]:
        """Every fraction's ``diffusion/f*/synthetic/mosaic.png``, by fraction."""
        return sorted((self.root / "diffusion").glob("f*/synthetic/mosaic.png"))

    def copypaste_mosaics(self) -> list[Path]:
        """Every fraction's ``copypaste/f*/mosaic.png``, by fraction."""
        return sorted((self.root / "copypaste").glob("f*/mosaic.png"))

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    def cell(self, cell: Named | str) -> Path:
        return self.cells / _name(cell)

    def metrics(self, cell: Named | str) -> Path:
        return self.cell(cell) / "metrics.json"

    def finished_cells(self, arm: str | None = None) -> list[Cell]:
        """The cells (of ``arm``) whose metrics the run folder holds, by name."""
        cells = [Cell.from_name(p.parent.name) for p in sorted(self.cells.glob("*/metrics.json"))]
        return [c for c in cells if arm is None or c.arm == arm]

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold ``locks/<name>.lock`` (waiting for another process that holds it): two
        processes sharing the run folder (``--models-only`` beside the cells, or a scheduler's
        ``--cell`` jobs) never write one model, pair set or cell. The lock goes with the
        process, so a killed job leaves none behind."""
        path = self.root / "locks" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


@dataclass(frozen=True)
class ResultsLayout:
    """A results folder (``--results``): ``cells/<cell>.json`` per committed cell (per-image
    metrics + the fingerprint of the configuration that computed them), ``config.yaml`` (the
    resolved configuration they ran), and, once a report is published there, ``table.md``,
    ``summary.json``, ``chart.png``, ``results.csv``, ...
    """

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    def cell(self, cell: Named | str) -> Path:
        return self.cells / f"{_name(cell)}.json"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"


def fine_tuned_from(config_yaml: Path) -> str | None:
    """The model a diffusion model folder was fine-tuned from (``train.init_from`` of its
    ``config.yaml``, the last three path parts: ``models/kumar-f0.10/image``), or None."""
    text = config_yaml.read_text() if config_yaml.is_file() else ""
    found = re.search(r"^\s*init_from:\s*(\S+)\s*$", text, re.MULTILINE)
    if found is None or found.group(1) in ("null", "~", "''", '""'):
        return None
    return "/".join(Path(found.group(1).strip("'\"")).parts[-3:])
