"""Volumes in, validated submission.zip out: ``python -m runtime predict`` (see :mod:`.run`).

``run`` is the run and its failure policy; ``models`` loads the run's models (``demo`` too) and
tells the settings what they are.

May import: the standard library, :mod:`runtime.contract`, :mod:`runtime.volumes`,
:mod:`runtime.inference` and :mod:`runtime.samples` (the demo model), never
:mod:`runtime.commands`.
"""

from __future__ import annotations

from runtime.pipeline.run import PredictReport, predict

__all__ = ["PredictReport", "predict"]
