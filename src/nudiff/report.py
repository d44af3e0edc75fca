"""The picture helpers, kept importable here: they live in :mod:`nudiff.pictures`, below the
stages that draw with them."""

from nudiff.pictures import (
    hstack,
    instance_colours,
    label_picture,
    mosaic,
    overlay,
    structure_picture,
    structure_rgb,
)

__all__ = ["hstack", "instance_colours", "label_picture", "mosaic", "overlay", "structure_picture",
           "structure_rgb"]
