"""Volumes and submissions, without torch: TIFF in and out, post-processing, the zip, scoring.

``inputs`` finds the volumes to predict; ``outputs`` checks where a run writes against them and
each other; ``tiff`` reads them (tifffile, or Pillow without
imagecodecs) and writes masks; ``postprocess`` cleans masks; ``submission`` writes and validates
``submission.zip``; ``scoring`` scores masks against labels; ``run_metrics`` writes metrics.json;
``preview`` writes PNGs.

May import: the standard library, :mod:`runtime.contract`, numpy, tifffile, Pillow, scipy (and
imagecodecs, psutil, tqdm when present). Never torch (checked by ``tests/test_layers.py``).
"""
