"""Whole scrolls: zarr and OME-Zarr volumes larger than memory, block by block, on Dask.

The volume is cut into blocks of whole output chunks. One window grid covers the whole volume;
a block runs every window of that grid that reaches it (its halo recomputed) and keeps its own
voxels, so the written volume equals the whole-volume result bit for bit (on the CPU in fp32),
whatever the block size and the number of workers. See docs/whole-scrolls.md.

Modules: ``source`` (input arrays, regions), ``grid`` (blocks and their windows), ``stats``
(global intensity statistics), ``store`` (output store, run fingerprint, done markers),
``blocks`` (one block on a worker), ``cluster`` (Dask), ``run`` (one whole run), ``options``
(the command-line options predict adds for zarr input).

May import: the standard library, numpy, ``runtime.contract``, ``runtime.inference``,
``runtime.volumes`` and ``runtime.pipeline`` (its model loading); zarr, fsspec and distributed
inside functions only, so that TIFF work never needs them. Never ``runtime.commands``.
"""
