"""Where things are: the run folder (``--out``) and the results folder (``--results``).

One paths object per folder, so that the loop, the store, the report and the benchmark scripts
name a fraction's models or a cell's metrics the same way. A layout with a relative root
(``RunLayout(Path())``) gives paths relative to any run folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

try:  # POSIX; elsewhere runs go unlocked (one process per run folder)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class Named(Protocol):
    name: str


SHIPPED_RECORD = "shipped.json"  # beside a model taken from models/: where it came from

def fraction_tag(fraction: float) -> str:
    """``f0.10``: how a labeled fraction appears in folder, cell and timing names."""
    return f"f{fraction:.2f}"


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
        """One line per finished diffusion model of the run: shipped (from where) or trained here."""
        lines = []
        for model in sorted(self.root.glob("diffusion/*/*/model")):
            record = model.parent / SHIPPED_RECORD
            source = (f"shipped, {json.loads(record.read_text())['from']}" if record.is_file()
                      else "trained in this run")
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
