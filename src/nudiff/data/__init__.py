"""Data layer: image / instance-map I/O, paired folders, patches, labeled subsets, preparation.

Stages read and write files through this package only (``nudiff.data.io`` is the one image
I/O module). ``nudiff data prepare`` turns paired folders into ``val/``, ``patches/`` and
``subsets/`` with manifests that later stages read.
"""
