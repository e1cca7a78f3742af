"""Where Kaggle mounted a notebook's inputs: the competition, and each model or dataset.

Kaggle has mounted attached inputs in two layouts, and both were seen at once:

- old: ``<root>/<slug>/``, ``<root>/<model>/<framework>/<variation>/<version>/``;
- new: ``<root>/datasets/<owner>/<slug>/``, ``<root>/competitions/<slug>/``,
  ``<root>/models/<owner>/<model>/<framework>/<variation>/<version>/``.

So no path is assumed: each input is found by a bounded breadth-first search for the folder whose
path ends the way its Kaggle reference says (the most specific form first). The notebook that
``python -m bundler kernel`` writes imports this once the wheelhouse's ``bootstrap.py`` has
installed kaggle-offline. Standard library only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

from runtime.installer.discovery import DATA_FOLDER_NAMES

__all__ = ["competition_root", "dataset_mount", "find_mount", "model_mount", "model_path"]

MAX_DEPTH = 6  # models/<owner>/<model>/<framework>/<variation>/<version>
MAX_FOLDERS = 5000  # a hard bound: a huge attached tree costs milliseconds, not minutes


def input_folders(root: Path) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Every folder under ``root`` as (folder, its parts below root), shallowest first."""
    queue: deque[tuple[Path, tuple[str, ...]]] = deque([(Path(root), ())])
    read = 0
    while queue and read < MAX_FOLDERS:
        folder, parts = queue.popleft()
        read += 1
        yield folder, parts
        if len(parts) >= MAX_DEPTH:
            continue
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError:  # unreadable: nothing of ours is in there
            continue
        queue.extend((c, (*parts, c.name)) for c in children if c.name not in DATA_FOLDER_NAMES)


def find_mount(root: Path, what: str, *tails: tuple[str, ...]) -> Path:
    """The shallowest folder whose path ends with the first of ``tails`` that matches any.

    Names compare without case: model mounts use a lower-case framework ("pytorch") where the
    reference says "pyTorch". Raises FileNotFoundError naming ``what`` and where it looked.
    """
    folders = list(input_folders(root))
    for tail in tails:
        wanted = tuple(part.lower() for part in tail)
        for folder, parts in folders:
            if tuple(part.lower() for part in parts[-len(wanted) :]) == wanted:
                return folder
    tops = sorted(parts[0] for _, parts in folders if len(parts) == 1)
    looked = " or ".join("/".join(tail) + "/" for tail in tails)
    raise FileNotFoundError(
        f"{what} is not attached: no {looked} under {root} (it holds: "
        f"{', '.join(tops[:12]) or 'nothing'}); add it as an input of the notebook "
        "(kernel-metadata.json lists it)"
    )


def dataset_mount(root: Path, ref: str) -> Path:
    owner, slug = ref.split("/")[:2]
    return find_mount(root, f"dataset {owner}/{slug}", ("datasets", owner, slug), (slug,))


def competition_root(root: Path, slug: str) -> Path:
    return find_mount(root, f"competition {slug}", ("competitions", slug), (slug,))


def model_mount(root: Path, ref: str) -> Path:
    owner, model, framework, variation, version = ref.split("/")
    return find_mount(
        root,
        f"model {ref}",
        ("models", owner, model, framework, variation, version),
        (model, framework, variation, version),
    )


def model_path(root: Path, kind: str, ref: str, inner: str = "") -> Path:
    """Where a model given as a model source or as a dataset (and a path in it) is mounted."""
    mount = model_mount(root, ref) if kind == "model" else dataset_mount(root, ref)
    path = mount / inner if inner else mount
    if not path.exists():
        raise FileNotFoundError(f"{ref}: {inner} not found in {mount}")
    return path
