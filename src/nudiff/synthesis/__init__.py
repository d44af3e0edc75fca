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

import lazy_loader

from nudiff.quality.filter import FilterConfig

# imported on first use (lazy_loader, as scikit-image does): `nudiff --help` stays light
__getattr__, _, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "cli": ["register"],
        "config": [
            "FLAT_SAMPLE_KEYS",
            "LABEL_UPSAMPLING",
            "REAL_STRUCTURES",
            "STRUCTURE_SOURCES",
            "SynthesisConfig",
            "check_same_config",
            "resolve_sampling",
        ],
        "pipeline": ["check_structure", "model_sampling", "synthesize", "write_mosaic"],
        "sources": ["LabelWindow", "pasted_window", "subset_window"],
    },
)
__all__ += ["FilterConfig"]  # imported above, eagerly


def __dir__() -> list[str]:  # the lazy names and the eager ones
    return list(__all__)
