"""Built-in sample data and the demo model: synthetic papyrus-like volumes, a sample competition
root (``python -m runtime sample``) and a tiny trained U-Net (``--model demo``).

May import: :mod:`runtime.contract`, :mod:`runtime.volumes` and :mod:`runtime.inference` (the
diamond's second row, beside the pipeline; torch only in ``demo.train``).
"""
