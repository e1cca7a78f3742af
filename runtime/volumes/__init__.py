"""Volumes and submissions, without torch: TIFF in and out, post-processing, the zip, scoring.

``inputs`` finds the volumes to predict; ``outputs`` checks where a run writes against them and
each other; ``tiff`` reads them (tifffile, or Pillow without imagecodecs) and writes masks;
``postprocess`` cleans masks; ``export`` writes one volume's outputs (mask, probability,
preview); ``submission`` writes and validates ``submission.zip``; ``scoring`` scores masks
against labels; ``run_metrics`` writes metrics.json; ``preview`` writes PNGs. ``metric`` is the
competition's metric, ``evaluation`` runs it over a submission (``runtime score``);
``probability`` saves and fuses probabilities, ``mask_settings`` turns them into masks,
``tuning`` searches those settings (``runtime tune``); ``parallel``, ``progress`` and ``plot``
serve them.

May import: the standard library, :mod:`runtime.contract`, :mod:`runtime.fusion`, numpy, tifffile,
Pillow, scipy (and imagecodecs, psutil, tqdm, cc3d, edt, topometrics when present). Never torch
(checked by ``tests/test_layers.py``).
"""
