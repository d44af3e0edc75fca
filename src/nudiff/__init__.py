"""nudiff: diffusion-based data augmentation for nuclei instance segmentation.

Pipeline (one sub-package or module per stage, data flows one way through files):
data -> structure -> diffusion -> synthesis -> segment -> metrics/experiment -> report.
"""

__version__ = "0.1.0"
