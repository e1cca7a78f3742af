"""The built-in demo model (``--model demo``): a tiny 3D U-Net trained on synthetic papyrus.

It lives beside this file as ``config.json`` + ``weights.pt`` and is rebuilt by
``python -m runtime.samples.demo.train --out runtime/samples/demo``. Importing this package costs
nothing: it only names the folder.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_DIR"]

DEMO_DIR: Path = Path(__file__).resolve().parent
