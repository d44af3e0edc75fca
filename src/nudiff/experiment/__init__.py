"""The augmentation experiment: labeled fraction x training data x seed -> metrics.

For every labeled fraction that needs synthetic pairs, an image model (and, when the labels
are sampled, a structure model) is trained on that fraction's own subset (shared by all
seeds), and ``n_synthetic`` pairs are synthesized. Then every cell trains a segmenter with \
**the same
number of optimizer steps**, predicts the test images and is scored per image.

Arms (what the segmenter trains on):

- ``real``:      the labeled subset only;
- ``real+syn``:  the subset plus the synthetic pairs (``segment.train.real_ratio`` of each
                 batch drawn from the real patches);
- ``real+copypaste``: the subset plus ``n_synthetic`` copy-paste patches (real nuclei of the
                 subset pasted at free positions of other subset patches, exact labels; see
                 ``nudiff.data.copypaste``), mixed like ``real+syn``: the simple baseline
                 diffusion pairs must beat;
- ``real+copypaste+syn``: the subset plus both extra sets (``2 × n_synthetic`` patches, still
                 ``real_ratio`` real per batch);
- ``real-dup``:  the subset repeated to as many patches as real + synthetic (a control: with
                 fixed steps and sampling with replacement it differs from ``real`` only by
                 chance, which makes it a noise floor);
- ``syn-only``:  the synthetic pairs alone, tested on real images.

Layout of ``OUT``: ``data/`` (prepared data), ``diffusion/f0.10/{structure,image,synthetic}``,
``copypaste/f0.10/`` (augmented patches + manifest + mosaic),
``cells/f0.10_real+syn_s0/{model,pred,metrics.json}``, ``results.csv``, ``report/``.
A finished cell (its ``metrics.json`` exists) is skipped, so a killed run resumes; unfinished
trainings resume from their last checkpoint. With ``results_dir`` (CLI ``--results``), every
finished cell's per-image metrics are also written to ``results_dir/cells/<cell>.json`` with a
fingerprint of the configuration that computed them; a later run (another session, a fresh
machine) takes a cell from there instead of recomputing it, and refuses one computed with a
different configuration. Committing that folder is how a grid longer than a session is run.
On a cluster, ``--models-only`` trains the diffusion models once, then one job per cell
(``--list-cells``, ``--cell NAME``) shares ``--out`` and ``--results`` (docs/cluster.md);
``nudiff experiment report`` builds the report from the committed cells.

The package: ``grid`` (config, the plan), ``fingerprint``, ``store`` (committed cells, where
each cell stands: ``--status``), ``training_data`` (models, pairs, copy-paste patches, what each
arm trains on), ``loop``, ``stats``, ``tables``, ``charts`` and ``report``, ``cli``. Cells, the
arm table and the run and results folders are in :mod:`nudiff.layout` (standard library only,
so that ``nudiff quality`` and the benchmark scripts read runs without importing this package).
"""

import lazy_loader

from nudiff.layout import ResultsLayout, RunLayout, fraction_tag

# imported on first use (lazy_loader, as scikit-image does): `nudiff --help` stays light
__getattr__, _, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "cli": ["register"],
        "fingerprint": ["cell_fingerprint"],
        "grid": [
            "ARMS",
            "Arm",
            "Cell",
            "ExperimentConfig",
            "Plan",
            "cells_of",
            "find_cells",
            "load_plan",
            "model_kinds",
            "reference_cell",
        ],
        "loop": ["RunContext", "run_cell", "run_experiment", "timed_step"],
        "report": ["collect_results", "publish_report", "write_experiment_report"],
        "stats": ["paired_gains", "paired_interval"],
        "store": [
            "cell_done",
            "cell_state",
            "commit_cell",
            "committed_cells",
            "committed_records",
            "committed_rows",
            "grid_status",
            "import_committed",
            "is_committed",
            "precision_note",
            "record_rows",
            "status_markdown",
            "synthetic_done",
        ],
        "training_data": ["write_subset_folder"],
    },
)
__all__ += ["ResultsLayout", "RunLayout", "fraction_tag"]  # imported above, eagerly


def __dir__() -> list[str]:  # the lazy names and the eager ones
    return list(__all__)
