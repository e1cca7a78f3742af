"""Resolution: what a target kernel needs vendored, decided with pip's own resolver.

The target's profile (wheel tags, markers, preinstalled set: ``profiles``), the requirement files
(``requirement_files``), the run of pip's resolver *for the target* in a subprocess
(``resolve`` launches it, ``pip_shim`` patches pip inside it, ``pip_protocol`` is what both
sides share), the kernel's preinstalled packages and their replacements (``preinstalled``), which
wheel fits the target (``wheels``) and the plan of what to vendor (``bundle_plan``).

May import: the standard library, pip (inside the subprocess only), ``packaging``,
:mod:`runtime.contract`, and of the bundler only ``bundler.errors`` and ``bundler.blobs``; never
``bundler.wheelhouse``, ``bundler.kaggle`` or ``bundler.commands`` (tests/test_layers.py).
Kept light: ``python -m bundler.resolution.pip_shim`` imports this package first.
"""
