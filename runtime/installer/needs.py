"""What ``runtime predict`` and ``runtime sample`` need from the environment, and how to get it.

Kaggle's images have all of it but imagecodecs; a bundler-only environment (``pip install
".[bundler]"``) has none of it. ``runtime doctor`` checks every need without importing anything
(``importlib.util.find_spec`` and the installed-distribution scan), and a command that fails with
``No module named 'numpy'`` says in one line which package or extra to install instead.
The minimums are those of the ``predict`` extra in pyproject.toml (a test keeps them equal).
Standard library only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from runtime.installer.interpreter import Interpreter

__all__ = ["PREDICT_NEEDS", "Need", "NeedStatus", "check_needs", "missing_module_message"]

EXTRA = "predict"


@dataclass(frozen=True)
class Need:
    distribution: str  # as pip names it
    module: str  # as Python imports it
    minimum: str = ""  # the predict extra's lower bound, "" for none
    in_extra: bool = True  # provided by kaggle-offline[predict]
    without: str = ""  # optional: what happens without it ("" for a required need)

    @property
    def optional(self) -> bool:
        return bool(self.without)

    def how_to_get(self) -> str:
        if self.distribution == "torch":
            return (
                "Kaggle's images have it; elsewhere: python -m pip install torch "
                f"--index-url {CPU_TORCH_INDEX} (the CPU build; plain PyPI's is CUDA, gigabytes)"
            )
        if self.in_extra:
            clone = _clone_root()
            if clone is not None:
                where = "." if clone == Path.cwd() else str(clone)
                return (
                    f"python -m pip install '{where}[{EXTRA}]' (or pip install {self.distribution})"
                )
            requirement = (
                f"{self.distribution}>={self.minimum}" if self.minimum else self.distribution
            )
            return (
                f"python -m pip install '{requirement}'; in a Kaggle kernel the image has it: run "
                "the attached wheelhouse's bootstrap.py first, then python -m runtime doctor"
            )
        return (
            f"bundle it: python -m bundler build {self.distribution} --optional {self.distribution}"
        )


CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def _clone_root() -> Path | None:
    """The checkout this runtime runs from (a clone holding pyproject.toml), else None.

    The path is not resolved: a runtime linked elsewhere (or installed) is not run "from a clone".
    """
    root = Path(__file__).parent.parent.parent
    pyproject = root / "pyproject.toml"
    try:
        return root if 'name = "kaggle-offline"' in pyproject.read_text(encoding="utf-8") else None
    except OSError:
        return None


PREDICT_NEEDS = (
    Need("torch", "torch", in_extra=False),
    Need("numpy", "numpy", "1.26"),
    Need("tifffile", "tifffile", "2024.1"),
    Need("Pillow", "PIL", "10"),
    Need("scipy", "scipy", "1.11"),
    Need("psutil", "psutil", "5.9", without="peak memory is read from getrusage alone"),
    Need(
        "connected-components-3d",
        "cc3d",
        "3.12",
        without="score, tune and component filtering label with scipy (slower)",
    ),
    Need(
        "imagecodecs",
        "imagecodecs",
        in_extra=False,
        without="LZW volumes are read through Pillow, page by page (slower)",
    ),
)


@dataclass(frozen=True)
class NeedStatus:
    need: Need
    version: str | None  # installed, None when missing
    importable: bool
    problem: str  # "" when the need is met

    def to_dict(self) -> dict[str, object]:
        return {
            "distribution": self.need.distribution,
            "module": self.need.module,
            "version": self.version,
            "importable": self.importable,
            "optional": self.need.optional,
            "problem": self.problem,
        }


def check_needs(interpreter: Interpreter) -> list[NeedStatus]:
    """Each of predict's needs against ``interpreter``, importing none of them."""
    from runtime.installer.versions import satisfies

    statuses = []
    for need in PREDICT_NEEDS:
        version = interpreter.version_of(need.distribution)
        try:
            importable = importlib.util.find_spec(need.module) is not None
        except (ImportError, ValueError):  # a broken package's __spec__, a half-deleted folder
            importable = False
        problem = ""
        if not importable or version is None:
            state = "not installed" if version is None else f"{version} installed, not importable"
            problem = f"{need.distribution} {state}: {need.how_to_get()}"
        elif need.minimum and not satisfies(version, f">={need.minimum}"):
            problem = (
                f"{need.distribution} {version} is older than the {need.minimum} it needs: "
                f"{need.how_to_get()}"
            )
        statuses.append(NeedStatus(need, version, importable, problem))
    return statuses


def missing_module_message(module: str | None, command: str) -> str | None:
    """One line for ``No module named <module>`` in ``runtime <command>``, if it is one of ours."""
    top = (module or "").split(".")[0]
    need = next((n for n in PREDICT_NEEDS if n.module == top), None)
    if need is None:
        return None
    return (
        f"`runtime {command}` needs {need.distribution}, which is not installed in this "
        f"environment: {need.how_to_get()}"
    )
