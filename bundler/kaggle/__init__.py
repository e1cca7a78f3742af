"""The Kaggle side: references, dataset and model metadata, the kernel's notebook.

``refs`` checks Kaggle's ids and sources, ``dataset`` writes ``dataset-metadata.json``,
``model_upload`` checks a model and writes its upload folder, ``kernel`` writes the notebook
(``notebook``, with ``notebook_inputs`` run inside the kernel) and ``kernel-metadata.json``.

May import: the standard library, :mod:`runtime.contract`, ``bundler.errors``,
``runtime.commands.predict`` (predict's option definitions, argparse only) and, inside
``model_upload``'s functions, ``runtime.inference`` (the model check runs the kernel's own loader
and engine); never ``bundler.resolution``, ``bundler.wheelhouse`` or ``bundler.commands``.
"""
