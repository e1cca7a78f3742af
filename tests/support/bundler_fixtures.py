"""The bundler tests' package world: real wheels and sdists covering each case the bundler handles.

- ``ko-app`` needs ``ko-lib>=1``, ``ko-backport`` only below Python 3.12, ``numpy>=1.26``
  (preinstalled on both Kaggle profiles) and ``ko-pure`` (an sdist-only pure-Python package).
- ``ko-lib`` 2.0 requires Python >= 3.12, so the 3.11 target gets 1.0.
- ``ko-codecs`` is like imagecodecs: 2.0 has only a ``cp312-abi3-manylinux_2_28`` wheel, 1.0 a
  ``cp311-abi3-manylinux2014`` one; ``ko-codecs312`` has *only* the cp312 wheel.
- ``ko-native`` is an sdist that needs compiling.
- ``ko-conflict`` needs ``tifffile<2026``, which would replace the kernel's tifffile 2026.3.3.
- ``tifffile`` 2026.11.1 and 2025.1.1 and ``numpy`` 9.0 exist on the index, to prove that a
  satisfied preinstalled package is never vendored and that a direct request upgrades.
- ``ko-net`` is nnunetv2's case: its newest 2.0 needs ``ko-arch>=2``, whose 2.0 pins
  ``tifffile<2026`` (below the kernel's, as dynamic-network-architectures pins timm); ``ko-net``
  1.0 with ``ko-arch`` 1.0 keeps the kernel's tifffile. ``ko-stuck`` needs ``ko-arch>=2`` in every
  version: no solution keeps the kernel.
- ``numpy`` 1.26.4 is on the index too (a downgrade the kernel's opencv-python would not survive).
- ``ko-gpu`` needs ``triton`` and ``nvidia-cudnn-cu12``, which only the GPU image has (no wheel of
  either is on the index), as liger-kernel needs triton.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.packages import make_index, make_wheel
from tests.support.sdists import make_sdist

CP312_ONLY = "cp312-abi3-manylinux_2_28_x86_64"
CP311_ABI3 = "cp311-abi3-manylinux2014_x86_64"


def make_distributions(dest: Path) -> list[Path]:
    return [
        make_wheel(
            dest,
            "ko-app",
            "1.0",
            requires=[
                "ko-lib>=1",
                'ko-backport; python_version < "3.12"',
                "numpy>=1.26",
                "ko-pure",
            ],
        ),
        make_wheel(dest, "ko-lib", "1.0"),
        make_wheel(dest, "ko-lib", "2.0", requires_python=">=3.12"),
        make_wheel(dest, "ko-backport", "1.0"),
        make_sdist(dest, "ko-pure", "0.5"),
        make_sdist(dest, "ko-native", "1.0", compiled=True),
        make_wheel(dest, "ko-codecs", "2.0", tag=CP312_ONLY, requires=["numpy"]),
        make_wheel(dest, "ko-codecs", "1.0", tag=CP311_ABI3, requires=["numpy"]),
        make_wheel(dest, "ko-codecs312", "2.0", tag=CP312_ONLY),
        make_wheel(dest, "ko-conflict", "1.0", requires=["tifffile<2026"]),
        make_wheel(dest, "tifffile", "2026.11.1", requires=["numpy"]),
        make_wheel(dest, "tifffile", "2025.1.1", requires=["numpy"]),
        make_wheel(dest, "numpy", "9.0"),
        make_wheel(dest, "numpy", "1.26.4"),
        make_wheel(dest, "ko-net", "2.0", requires=["ko-arch>=2"]),
        make_wheel(dest, "ko-net", "1.0", requires=["ko-arch>=1"]),
        make_wheel(dest, "ko-arch", "2.0", requires=["tifffile<2026"]),
        make_wheel(dest, "ko-arch", "1.0", requires=["tifffile"]),
        make_wheel(dest, "ko-stuck", "1.0", requires=["ko-arch>=2"]),
        make_wheel(dest, "ko-gpu", "1.0", requires=["triton>=3", "nvidia-cudnn-cu12"]),
    ]


def make_fixture_index(root: Path) -> str:
    """Build the distributions and a file:// PEP 503 index of them under ``root``."""
    return make_index(root / "index", make_distributions(root / "dists"))
