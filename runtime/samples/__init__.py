"""Built-in sample data and the demo model: synthetic papyrus-like volumes, a sample competition
root (``python -m runtime sample``) and a tiny trained U-Net (``--model demo``).

May import: everything below it (:mod:`runtime.volumes`; torch only in ``demo.train``).
"""
