"""Segmentation stage: a HoVer-Net-style segmenter (NP + HV heads), its training loop,
tiled inference and post-processing through :func:`nudiff.structure.decode`.

- :mod:`.config`   ``SegmentConfig`` (YAML section ``segment``);
- :mod:`.model`    ``build_segmenter``: a light U-Net or MONAI's ``HoVerNet``;
- :mod:`.augment`  HoVer-Net-style geometric + colour augmentation, targets after geometry;
- :mod:`.train`    ``train_segmenter`` (accelerate, safetensors checkpoints, model selection);
- :mod:`.predict`  ``load_segmenter``, ``predict_instances``, ``predict_folder``;
- :mod:`.cli`      ``nudiff segment train|predict``.
"""
