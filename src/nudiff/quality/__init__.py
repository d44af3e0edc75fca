"""How good is a synthetic paired set, measured against real data (`nudiff quality`).

Every measure comes with its real-versus-real floor: the same measure between two halves of
the real data, so a reader sees how far from real a set is.

- :mod:`nudiff.quality.stats`: windows, nucleus / colour / texture statistics, Wasserstein-1;
- :mod:`nudiff.quality.c2st`: a classifier two-sample test (small CNN, real vs synthetic);
- :mod:`nudiff.quality.kid`: kernel inception distance on a segmenter encoder's features;
- :mod:`nudiff.quality.fidelity`: label fidelity (a real-trained segmenter against the labels);
- :mod:`nudiff.quality.assess`: all of them on two folders -> a flat dict + per-pair scores;
- :mod:`nudiff.quality.report`: ``quality.md``, histograms, best / worst mosaics;
- :mod:`nudiff.quality.cli`: ``nudiff quality``.
"""
