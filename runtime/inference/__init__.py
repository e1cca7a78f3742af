"""Inference with torch: models, the hardware probe, sliding-window blending, the engine.

``segmentation_model`` is the model contract (:class:`SegmentationModel`, ``PreparedVolume``,
``Ensemble``); ``checkpoints`` holds the safe readers of model files; ``models`` dispatches a
``--model`` path to the loader of its format (the ``unet`` family, TorchScript, ``.pt2``, nnU-Net)
without arbitrary unpickling (``pt2`` reads and runs ``torch.export`` programs without unpickling
or evaluating anything from the file; ``nnunet`` reads nnU-Net v2 trained-model folders with
dynamic-network-architectures, never nnunetv2); ``probe`` decides device, precision, layout and compilation by
running something; ``sliding_window`` holds the pure window and blending helpers; ``engine``'s
``Segmenter`` owns devices and the out-of-memory fallbacks; ``workers`` spreads volumes over
GPUs; ``time_budget`` trims test-time augmentation to fit the run's time.

May import: the standard library, :mod:`runtime.contract`, :mod:`runtime.fusion`, numpy, torch, scipy (lazily:
nnU-Net's Gaussian map and hole filling) and dynamic-network-architectures (lazily). Not
:mod:`runtime.volumes`: the engine takes arrays, the pipeline does the I/O.
"""
