"""How much a run will write, estimated before its work, so that a full disk is found first.

The estimate is from the volumes' headers (read without decoding): every mask is written
uncompressed to the temporary folder before it is zipped, the zip is at most a quarter of the
masks (0/1 voxels deflate far better than that), and each saved probability is one or two
bytes a voxel. :func:`runtime.volumes.outputs.check_outputs` compares it with the free space of
each output's filesystem; a run that cannot fit says so in one line before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.volumes.inputs import VolumeInputs
    from runtime.volumes.outputs import Output

__all__ = ["predict_estimates", "volume_voxels"]

_ZIP_SHARE = 4  # the zip of 0/1 masks is at most a quarter of their voxels


def volume_voxels(inputs: VolumeInputs) -> list[int]:
    """Each readable volume's voxel count, from its header (unreadable ones count nothing)."""
    from runtime.contract.errors import VolumeError
    from runtime.volumes.tiff import read_volume_header

    counts = []
    for source in inputs.sources:
        if source.path is None:
            continue
        try:
            counts.append(math.prod(read_volume_header(source.path).shape))
        except (VolumeError, OSError):
            continue  # its run fails it later, and writes at most an all-zero stand-in
    return counts


def predict_estimates(
    outputs: Sequence[Output], inputs: VolumeInputs, *, own_workdir: bool, encoding: str
) -> list[Output]:
    """``outputs`` with what predict will write in each (``own_workdir``: no --workdir given,
    so the temporary mask folder is beside the zip; ``encoding``: of saved probabilities)."""
    from runtime.volumes.probability import stored_bytes

    voxels = volume_voxels(inputs)
    masks = sum(voxels)
    zipped = masks // _ZIP_SHARE
    sizes = {
        # the temporary mask folder sits beside the zip unless --workdir moves it
        "-o": zipped + (masks if own_workdir else 0),
        "--workdir": masks,
        "--save-probabilities": sum(stored_bytes((n, 1, 1), encoding) for n in voxels),
    }
    return [dataclasses.replace(o, bytes=sizes.get(o.option, o.bytes)) for o in outputs]
