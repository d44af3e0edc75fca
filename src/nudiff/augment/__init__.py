"""`nudiff augment`: a researcher's own labeled images -> a segmenter trained with synthetic pairs,
and the evidence whether the pairs helped on their images.

One command over the experiment machinery (:mod:`nudiff.experiment`): the user's paired folder
is checked (:mod:`nudiff.augment.checks`), part of its images is held out for evaluation (or
``--test DIR``), the shipped image model is fine-tuned on the rest (``--from``; ``--scratch``
trains one), pairs are painted on the user's own labels and filtered, and two segmenters are
trained at the same budget: real only, and real + pairs. Both are scored on the held-out images;
the report opens with real-only against real + pairs (:mod:`nudiff.augment.pipeline`). With
very few images, ``--folds K`` holds each image out once instead (:mod:`nudiff.augment.folds`).
"""

from pathlib import Path

import lazy_loader

_CLONE = Path(__file__).resolve().parents[3]
#: the configuration `nudiff augment` runs by default
DEFAULT_CONFIG = _CLONE / "configs" / "augment.yaml"
#: the image model `nudiff augment` fine-tunes by default, when the clone has it: as good pairs as
#: one trained from scratch in a fifth of the minutes (benchmarks/results/fine-tune/)
DEFAULT_FROM = _CLONE / "models" / "kumar-f0.10"

# imported on first use (lazy_loader, as scikit-image does): `nudiff --help` stays light
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "checks": ["check_labeled_folder"],
        "cli": ["register"],
        "folds": ["augment_folds"],
        "pipeline": ["AugmentLayout", "augment", "augment_plan"],
    },
)
