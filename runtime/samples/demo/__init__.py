"""The built-in demo model (``--model demo``): a tiny 3D U-Net trained on synthetic papyrus.

It lives beside this file as ``config.json`` + ``weights.pt`` and is rebuilt by
``python -m runtime.samples.demo.train --out runtime/samples/demo``. Importing this package costs
nothing: it only names the folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["DEMO_DIR", "SAMPLE_MARKER", "demo_warning"]

DEMO_DIR: Path = Path(__file__).resolve().parent
# Written by `runtime sample` into the roots it makes: the data the demo model is meant for.
SAMPLE_MARKER = "kaggle-offline-sample.json"


def demo_warning(models: Sequence[str], input_path: Path | str) -> str | None:
    """The loud warning for a run on the demo model outside the sample data, else None.

    The demo model was trained on synthetic volumes: on real data its masks look like output and
    mean nothing, and with no ``--model`` it is what predict uses.
    """
    if "demo" not in (list(models) or ["demo"]):
        return None
    path = Path(input_path)
    # INPUT is a competition root, its test_images/ folder or one volume in it.
    if any((folder / SAMPLE_MARKER).is_file() for folder in (path, *path.parents[:2])):
        return None
    how = "no --model was given" if not models else "--model demo"
    return (
        f"WARNING: this run uses the DEMO model ({how}): a tiny U-Net trained on synthetic\n"
        "WARNING: volumes, NOT A REAL MODEL. Its masks of real data are no submission.\n"
        "WARNING: give --model your model folder or file (python -m runtime predict --help)."
    )
