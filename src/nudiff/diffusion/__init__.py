"""The two diffusion models of NuDiff: nuclei structures, and images conditioned on them.

- :mod:`~nudiff.diffusion.config`: ``DiffusionConfig`` (model / data / train / sample);
- :mod:`~nudiff.diffusion.networks`: MONAI U-Nets, the 4-channel condition, ``Denoiser``;
- :mod:`~nudiff.diffusion.schedule`: the noise schedule and the diffusers samplers;
- :mod:`~nudiff.diffusion.train`: the one training loop, ``train.train`` (not re-exported here:
  a function ``train`` would shadow the module ``nudiff.diffusion.train``);
- :mod:`~nudiff.diffusion.sample`: ``load_model``, ``sample_structures``, ``sample_images``.
"""

import lazy_loader

# imported on first use (lazy_loader, as scikit-image does): `nudiff --help` stays light
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "config": [
            "DataConfig",
            "DenoiserConfig",
            "DiffusionConfig",
            "DiffusionTrainConfig",
            "SampleConfig",
        ],
        "networks": ["Denoiser", "condition_tensor"],
        "sample": ["load_model", "sample_images", "sample_structures"],
    },
)
