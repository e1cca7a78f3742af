"""Volumes in, validated submission.zip out: ``python -m runtime predict`` (see :mod:`.run`).

``run`` is the run and its failure policy; ``stages`` the thread plumbing of its three stages
(reader, engine, writer); ``models`` loads the run's models (``demo`` too), tells the settings
what they are and sets up the engine (``set_up_engine``, for any runner of a ``RunRequest``).

May import: the standard library, :mod:`runtime.contract`, :mod:`runtime.volumes`,
:mod:`runtime.inference` and :mod:`runtime.samples` (the demo model), never
:mod:`runtime.commands`.
"""

from __future__ import annotations

from runtime.pipeline.run import PredictReport, predict

__all__ = ["PredictReport", "predict"]
