"""A package world shaped like vLLM's, against the ``kaggle-py312`` kernel (torch 2.10.0+cu128).

- ``ko-llm`` is vLLM: compiled wheels (``cp38-abi3-manylinux_2_28_x86_64``) whose newest releases
  pin a torch the kernel lacks (3.0 pins ``torch==2.14.0`` with ``torchvision==0.29.0``, 2.0 pins
  ``torch==2.12.0``); 1.5 keeps the kernel's ``torch==2.10.0`` and ``torchvision==0.25.0``; 1.0 is
  an ancient sdist only, whose metadata build fails as vLLM 0.3.3's does (``No module named
  'pkg_resources'``): it must never be built. 3.0 ships an sdist beside its wheel, as vLLM does.
- ``torch`` 2.14.0 and 2.12.0 are CUDA-build-like wheels pinning their companions: ``triton``
  and ``nvidia-cudnn-cu12`` at versions the kernel lacks (the kernel has triton 3.6.0 and
  nvidia-cudnn-cu12 9.10.2.21, pinned by its torch 2.10.0), plus kernel-satisfied ``sympy`` and
  ``filelock``. ``torchvision`` 0.29.0 and ``torchaudio`` 2.14.0 pin ``torch==2.14.0``.
- ``ko-oldbuild`` 1.0 is an sdist whose build requirements cannot be installed: its nested pip
  finds ``ko-helper`` (a wheel on the same index) and then fails on ``ko-no-such-builddep``.

Sizes are tiny but distinct (``payload`` bytes of incompressible data), so the tests can check
that the download sizes reported before downloading are the files' real sizes.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path

from tests.support.packages import make_index, make_wheel
from tests.support.sdists import make_sdist

COMPILED = "cp38-abi3-manylinux_2_28_x86_64"
TORCH_TAG = "cp312-cp312-manylinux_2_28_x86_64"
LINUX = '; platform_system == "Linux"'
PKG_RESOURCES = "No module named 'pkg_resources'"


def _payload(seed: int, size: int) -> str:
    data = random.Random(seed).randbytes(size).hex()
    return f"DATA = {data!r}\n"


def make_llm_distributions(dest: Path) -> list[Path]:
    def wheel(name: str, version: str, requires: list[str], tag: str, kb: int) -> Path:
        return make_wheel(
            dest, name, version, requires=requires, tag=tag,
            module_source=_payload(zlib.crc32(f"{name}-{version}".encode()), kb * 500),
        )  # fmt: skip

    return [
        wheel(
            "ko-llm", "3.0", ["torch==2.14.0", "torchvision==0.29.0", "numpy>=1.26"], COMPILED, 40
        ),
        make_sdist(dest, "ko-llm", "3.0", requires=["torch==2.14.0"], compiled=True),
        wheel("ko-llm", "2.0", ["torch==2.12.0", "numpy>=1.26"], COMPILED, 40),
        wheel("ko-llm", "1.5", ["torch==2.10.0", "torchvision==0.25.0", "numpy"], COMPILED, 30),
        make_sdist(
            dest, "ko-llm", "1.0", requires=["torch"], compiled=True, fail_metadata=PKG_RESOURCES
        ),  # fmt: skip
        wheel(
            "torch",
            "2.14.0",
            [
                f"triton==3.7.0{LINUX}",
                f"nvidia-cudnn-cu12==9.19.0.1{LINUX}",
                "sympy>=1.13.3",
                "filelock",
            ],
            TORCH_TAG,
            120,
        ),  # fmt: skip
        wheel("torch", "2.12.0", [f"triton==3.6.0{LINUX}", "sympy>=1.13.3"], TORCH_TAG, 110),
        wheel("triton", "3.7.0", [], TORCH_TAG, 60),
        wheel("nvidia-cudnn-cu12", "9.19.0.1", [], "py3-none-manylinux_2_27_x86_64", 80),
        wheel("torchvision", "0.29.0", ["torch==2.14.0", "numpy"], TORCH_TAG, 20),
        wheel("torchaudio", "2.14.0", ["torch==2.14.0"], TORCH_TAG, 10),
        make_wheel(dest, "ko-helper", "1.0"),
        make_sdist(dest, "ko-oldbuild", "1.0", build_requires=["ko-helper", "ko-no-such-builddep"]),
    ]


def make_llm_index(root: Path) -> Path:
    """The distributions as a PEP 503 tree under ``root/index`` (serve it, or use its file URL)."""
    make_index(root / "index", make_llm_distributions(root / "dists"))
    return root / "index"
