"""What a prediction run measured, for metrics.json: per-volume timings and outcomes, peak
memory, library versions and the submission's hash.

Everything here degrades instead of failing: no psutil means RSS comes from ``resource`` only,
no CUDA means no GPU figures. A metrics file must never be the reason a submission is lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import sys
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "METRICS_FORMAT",
    "PeakMemory",
    "VolumeRecord",
    "library_versions",
    "gpu_peak_memory",
    "write_metrics",
]

METRICS_FORMAT = "kaggle-offline-metrics"


@dataclasses.dataclass
class VolumeRecord:
    """One volume's journey through predict."""

    id: str
    path: str | None
    status: str = "pending"  # "ok" | "zero-mask" (failed, an all-zero mask stands in) | "no-mask"
    shape: list[int] | None = None
    dtype: str | None = None
    compression: str | None = None
    decoder: str | None = None  # "tifffile" or "pillow"
    read_seconds: float = 0.0
    infer_seconds: float = 0.0
    postprocess_seconds: float = 0.0
    write_seconds: float = 0.0
    foreground_fraction: float | None = None
    device: str | None = None
    precision: str | None = None
    compiled: bool | None = None
    tta: list[str] | None = None  # the test-time transforms that ran, the identity first
    batch_size: int | None = None  # windows per forward it ran with, after any back-off
    accumulation: str | None = None  # "device", "slab" or "host"
    nonfinite_voxels: int = 0  # NaN/inf input voxels, replaced before inference
    probability_file: str | None = None  # where --save-probabilities put it
    threshold: float | None = None  # the threshold its mask used, when decided from the probability
    notes: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("read_seconds", "infer_seconds", "postprocess_seconds", "write_seconds"):
            data[key] = round(data[key], 4)
        if data["foreground_fraction"] is not None:
            data["foreground_fraction"] = round(data["foreground_fraction"], 6)
        return data


class PeakMemory:
    """Peak resident memory of this process, sampled on a thread while the context is open.

    psutil's RSS is sampled every ``interval`` seconds; on Linux and macOS ``getrusage`` adds
    the kernel's own high-water mark, which catches peaks between samples.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        try:
            import psutil

            self._process = psutil.Process()
        except ImportError:
            pass

    @property
    def source(self) -> str:
        return "psutil+getrusage" if self._process is not None else "getrusage"

    def sample(self) -> None:
        if self._process is not None:
            with contextlib.suppress(Exception):  # a vanished /proc entry must not end a run
                self._peak = max(self._peak, int(self._process.memory_info().rss))

    @property
    def peak_bytes(self) -> int:
        self.sample()
        return max(self._peak, _rusage_peak_bytes())

    def __enter__(self) -> PeakMemory:
        self.sample()
        if self._process is not None:
            self._thread = threading.Thread(target=self._watch, name="peak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def gpu_peak_memory() -> dict[str, int]:
    """Peak memory allocated by torch per CUDA device, in bytes; {} when CUDA was never used."""
    torch = sys.modules.get("torch")  # never import torch just to learn it was not used
    if torch is None:
        return {}
    try:
        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return {}
        return {
            f"cuda:{index}": int(torch.cuda.max_memory_allocated(index))
            for index in range(torch.cuda.device_count())
        }
    except Exception:
        return {}


def library_versions() -> dict[str, Any]:
    """Versions of everything that decides what a run does (None: not installed)."""
    from runtime import __version__
    from runtime.volumes.tiff import imagecodecs_available

    versions: dict[str, Any] = {
        "kaggle-offline": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for name in ("numpy", "torch", "tifffile", "Pillow", "scipy", "psutil", "tqdm"):
        versions[name] = _version(name)
    versions["imagecodecs"] = _version("imagecodecs") if imagecodecs_available() else None
    versions["cudnn"] = _cudnn_version()
    versions["cuda"] = _torch_attribute("version.cuda")
    return versions


def write_metrics(path: Path | str, data: Mapping[str, Any]) -> None:
    """Write ``data`` as pretty JSON through a temporary file and a rename."""
    from runtime.contract.files import write_text_atomically

    document = {"format": METRICS_FORMAT, "format_version": 1, "written": _now(), **data}
    write_text_atomically(path, json.dumps(document, indent=2, default=str) + "\n")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cudnn_version() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        return None


def _torch_attribute(dotted: str) -> Any:
    value: Any = sys.modules.get("torch")
    for part in dotted.split("."):
        value = getattr(value, part, None)
    return value


def _rusage_peak_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes, Linux: KiB


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
