"""Ensemble fusion of foreground probabilities: the one definition of the maths.

The engine fuses its members' probabilities per volume as it computes them
(:mod:`runtime.inference.engine`), and ``runtime fuse`` fuses probabilities saved by earlier runs
(:func:`runtime.volumes.probability.fuse`); both use :class:`Fusion`, so an ensemble run and a
fusion of its members' saved probabilities give the same result, up to how they were stored.

May import: the standard library, :mod:`runtime.contract` and numpy. It sits below both
:mod:`runtime.volumes` and :mod:`runtime.inference` (checked by ``tests/test_layers.py``).
"""

from __future__ import annotations

from runtime.fusion.mean import LOGIT_CLIP, LOGIT_LIMIT, Fusion, sigmoid

__all__ = ["LOGIT_CLIP", "LOGIT_LIMIT", "Fusion", "sigmoid"]
