"""Finding an nnU-Net v2 trained-model folder, and the fold checkpoints to use in it.

nnU-Net writes ``nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>/`` holding
``dataset.json``, ``plans.json`` and ``fold_<k>/checkpoint_final.pth`` (and ``checkpoint_best.pth``);
``fold_all`` when trained on all cases. A user may point at that folder, at the dataset folder above
it, or at a Kaggle model or dataset mount with the folder somewhere inside: below a given folder the
trained-model folders are found by search, and exactly one must be there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.contract.errors import ModelError
from runtime.contract.settings import Checkpoint

__all__ = [
    "CHECKPOINTS",
    "TrainedModelFolder",
    "find_trained_model_folder",
    "open_trained_model_folder",
    "refuse_a_part",
]

CHECKPOINTS = {choice: f"checkpoint_{choice}.pth" for choice in Checkpoint}
_FOLD = re.compile(r"fold_(\d+|all)")
_REQUIRED_FILES = ("dataset.json", "plans.json")
# A Kaggle model mount puts the upload 4 levels down (models/OWNER/NAME/FRAMEWORK/VARIATION/VERSION);
# nnUNet_results adds 2 more. Deeper trees are not searched (and never followed through links).
_SEARCH_DEPTH = 7


@dataclass(frozen=True)
class TrainedModelFolder:
    """One trained-model folder and the checkpoints chosen in it."""

    path: Path
    trainer: str | None  # from the folder name, None when the folder is not named so
    plans_name: str | None
    configuration: str | None
    checkpoints: dict[str, Path]  # fold ("0", "1", ..., "all") -> checkpoint file, in fold order
    skipped: tuple[str, ...] = ()  # why fold folders present were left out (default folds only)

    @property
    def folds(self) -> list[str]:
        return list(self.checkpoints)


def find_trained_model_folder(path: Path) -> Path | None:
    """The trained-model folder ``path`` is, or the only one below it; None if there is none.

    Raises ModelError when several are below ``path`` (naming them): which one to run is the
    user's choice, never a guess.
    """
    if _looks_like_trained_model(path):
        return path
    refuse_a_part(path)
    found = sorted(_search(path))
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(path)) for p in found[:6])
        more = f" and {len(found) - 6} more" if len(found) > 6 else ""
        raise ModelError(
            f"{path} holds {len(found)} nnU-Net trained-model folders ({names}{more}); "
            "point --model at one of them (or repeat --model for an ensemble)"
        )
    return found[0]


def refuse_a_part(path: Path) -> None:
    """A fold folder or a checkpoint of a trained-model folder is not a model on its own: say
    what to give instead (nnU-Net checkpoints also hold numpy objects, whose refusal by the plain
    checkpoint reader would not help)."""
    fold = path.parent if path.is_file() else path
    if _FOLD.fullmatch(fold.name) and _looks_like_trained_model(fold.parent):
        which = fold.name[len("fold_") :]
        checkpoint = ""
        if path.is_file() and path.name in CHECKPOINTS.values():
            checkpoint = f" --checkpoint {path.stem[len('checkpoint_') :]}"
        raise ModelError(
            f"{path} is part of the nnU-Net trained-model folder {fold.parent}: give "
            f"--model {fold.parent} --folds {which}{checkpoint}"
        )


def open_trained_model_folder(
    path: Path,
    *,
    folds: Sequence[int | str] | None = None,
    checkpoint: Checkpoint | str = Checkpoint.FINAL,
) -> TrainedModelFolder:
    """Check the folder is complete and pick the checkpoints; a one-line error otherwise
    (``checkpoint`` is one of the resolved settings' values)."""
    filename = CHECKPOINTS[Checkpoint(checkpoint)]
    present = _contents(path)
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    fold_dirs = _fold_folders(path)
    if missing:
        raise ModelError(
            f"{path}: not a complete nnU-Net trained-model folder: no {' or '.join(missing)} "
            f"(it holds {present})"
        )
    if not fold_dirs:
        raise ModelError(
            f"{path}: no fold_* folder with a checkpoint (it holds {present}); copy the "
            "fold_<k>/ folders of nnUNet_results too"
        )
    with_checkpoint = {
        fold: d / filename for fold, d in fold_dirs.items() if (d / filename).is_file()
    }
    if folds is None:
        chosen = _default_folds(path, fold_dirs, with_checkpoint, filename)
        skipped = tuple(
            f"fold_{fold} left out: no {filename}"
            for fold in fold_dirs
            if fold not in with_checkpoint
        )
    else:
        chosen = _asked_folds(path, folds, fold_dirs, with_checkpoint, filename)
        skipped = ()
    trainer, plans_name, configuration = _parse_name(path.name)
    return TrainedModelFolder(
        path=path,
        trainer=trainer,
        plans_name=plans_name,
        configuration=configuration,
        checkpoints={fold: with_checkpoint[fold] for fold in chosen},
        skipped=skipped,
    )


# --- helpers ------------------------------------------------------------------------------------
def _looks_like_trained_model(path: Path) -> bool:
    """Any of the parts of a trained-model folder: then it is one (complete or not)."""
    if any((path / name).is_file() for name in _REQUIRED_FILES):
        return True
    return bool(_fold_folders(path)) or _parse_name(path.name)[0] is not None


def _search(root: Path) -> list[Path]:
    """Folders below ``root`` with fold_* folders or a Trainer__Plans__configuration name."""
    found: list[Path] = []
    root_depth = len(root.parts)
    for current, dirs, _files in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if any(_FOLD.fullmatch(d) for d in dirs) or _parse_name(here.name)[0] is not None:
            found.append(here)
            dirs[:] = []  # its fold_* folders are part of it
        elif len(here.parts) - root_depth >= _SEARCH_DEPTH:
            dirs[:] = []
    return found


def _fold_folders(path: Path) -> dict[str, Path]:
    """fold name -> folder, numbered folds in number order, then fold_all."""
    try:
        entries = [p for p in path.iterdir() if p.is_dir() and _FOLD.fullmatch(p.name)]
    except OSError:
        return {}
    entries.sort(key=lambda p: (p.name == "fold_all", _fold_number(p.name)))
    return {p.name[len("fold_") :]: p for p in entries}


def _fold_number(name: str) -> int:
    suffix = name[len("fold_") :]
    return int(suffix) if suffix.isdigit() else -1


def _default_folds(
    path: Path, fold_dirs: dict[str, Path], with_checkpoint: dict[str, Path], filename: str
) -> list[str]:
    # As nnU-Net's auto-detection: the numbered folds with the checkpoint; fold_all only when it
    # is the only one (nnU-Net would then find nothing and fail).
    numbered = [fold for fold in with_checkpoint if fold != "all"]
    chosen = numbered or [fold for fold in with_checkpoint if fold == "all"]
    if not chosen:
        raise ModelError(
            f"{path}: no fold has {filename} ({_fold_summary(fold_dirs)}){_hint(filename)}"
        )
    return chosen


def _asked_folds(
    path: Path,
    folds: Sequence[int | str],
    fold_dirs: dict[str, Path],
    with_checkpoint: dict[str, Path],
    filename: str,
) -> list[str]:
    chosen: list[str] = []
    for fold in folds:
        name = str(fold).strip()
        if not (name == "all" or name.isdigit()):
            raise ModelError(f"--folds: {fold!r} is not a fold number or 'all'")
        name = name if name == "all" else str(int(name))
        if name not in with_checkpoint:
            why = "is missing" if name not in fold_dirs else f"has no {filename}"
            raise ModelError(
                f"{path}: fold_{name} {why} ({_fold_summary(fold_dirs)}){_hint(filename)}"
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ModelError("--folds names no fold")
    return chosen


def _fold_summary(fold_dirs: dict[str, Path]) -> str:
    parts = []
    for fold, folder in fold_dirs.items():
        files = sorted(p.name for p in folder.glob("checkpoint_*.pth"))
        parts.append(f"fold_{fold}: {', '.join(files) or 'no checkpoint'}")
    return "; ".join(parts) or "no fold_* folder"


def _hint(filename: str) -> str:
    other = Checkpoint.BEST if filename == CHECKPOINTS[Checkpoint.FINAL] else Checkpoint.FINAL
    return f"; choose other folds with --folds, or --checkpoint {other}"


def _contents(path: Path) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    except OSError as error:
        return f"nothing readable: {error.strerror or error}"
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return shown or "nothing"


def _parse_name(name: str) -> tuple[str | None, str | None, str | None]:
    parts = name.split("__")
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2]
    return None, None, None
