"""The contract: what the bundler writes and the kernel reads.

A target profile (:mod:`~runtime.contract.profile`), the wheelhouse manifest
(:mod:`~runtime.contract.manifest`), the error hierarchy (:mod:`~runtime.contract.errors`), the
atomic-write and hashing helpers both halves share (:mod:`~runtime.contract.files`), and a predict
run's settings with their one resolution (:mod:`~runtime.contract.settings`, which ``bundler
kernel`` calls too).

May import: the standard library only (checked by ``tests/test_layers.py``). It runs in a kernel
where nothing of ours is installed yet.
"""
