"""The wheelhouse: download, build, write and verify the folder that becomes a Kaggle dataset.

``builder`` runs a build from resolution to the written folder: ``downloads`` fetches through
pip's session (``transport``, in pip's subprocess) into the sha256 store (``bundler.blobs``),
``sdists`` and ``self_wheel`` build the wheels no index offers, ``output`` writes the folder,
``verification`` checks one, ``updates`` says what changed since the last build.

May import: the standard library, pip (inside the subprocess only), ``packaging``, ``build``,
:mod:`runtime.contract`, ``bundler.errors``, ``bundler.blobs``, :mod:`bundler.resolution` and
:mod:`bundler.kaggle` (the dataset's metadata); never ``bundler.commands``.
"""
