"""`nudiff synthesize`: structures -> instance maps -> images -> a paired dataset + manifest.

- :mod:`nudiff.synthesis.config`: :class:`SynthesisConfig`, its deprecated keys, and the check
  that a folder is resumed with the configuration that made it;
- :mod:`nudiff.synthesis.sources`: where the labels come from (sampled structures, windows of
  the labeled subset, those windows with nuclei pasted in), each a small source of
  :class:`~nudiff.synthesis.sources.LabelWindow` records;
- :mod:`nudiff.synthesis.pipeline`: the unfiltered and filtered synthesis, the manifest and
  the mosaic (its docstring describes the output layout);
- :mod:`nudiff.synthesis.cli`: the ``nudiff synthesize`` command.
"""

from nudiff.quality.filter import FilterConfig  # with its filter, in nudiff.quality.filter
from nudiff.synthesis.cli import register
from nudiff.synthesis.config import (
    FLAT_SAMPLE_KEYS,
    LABEL_UPSAMPLING,
    REAL_STRUCTURES,
    STRUCTURE_SOURCES,
    SynthesisConfig,
    check_same_config,
    resolve_sampling,
)
from nudiff.synthesis.pipeline import (
    check_structure,
    model_sampling,
    synthesize,
    write_mosaic,
)
from nudiff.synthesis.sources import LabelWindow, pasted_window, subset_window

__all__ = [
    "FLAT_SAMPLE_KEYS",
    "LABEL_UPSAMPLING",
    "REAL_STRUCTURES",
    "STRUCTURE_SOURCES",
    "FilterConfig",
    "LabelWindow",
    "SynthesisConfig",
    "check_same_config",
    "check_structure",
    "model_sampling",
    "pasted_window",
    "register",
    "resolve_sampling",
    "subset_window",
    "synthesize",
    "write_mosaic",
]
