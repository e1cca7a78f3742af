"""The offline install path: find wheelhouses, plan what is missing, verify, run pip once.

``discovery`` finds wheelhouses under ``/kaggle/input``; ``interpreter`` is the installed-
distribution view of this Python; ``plan`` decides what to install before anything is touched;
``staging`` hash-checks private copies; ``prechecks`` refuses what pip would fail on (METADATA
against the file name, free space); ``journal`` keeps a half-finished pip run from counting as an
install; ``lock`` keeps installs into one environment apart;
``pip_step`` runs pip offline; ``core.install`` joins them and ``report`` says what happened.
``bootstrap.py`` (copied verbatim into every wheelhouse), ``doctor`` (with ``needs``, what predict
needs) and ``capture`` (profiles) are the entry points of a kernel.

May import: the standard library and :mod:`runtime.contract` only (checked by
``tests/test_layers.py``), inside functions too: it runs before numpy, torch or packaging exist.
"""
