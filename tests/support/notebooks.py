"""Run a notebook's code cells as its kernel would: in order, in one namespace, in one process.

    python tests/support/notebooks.py NOTEBOOK.ipynb

The simulated Kaggle kernels have no Jupyter, so the cells' code is compiled and executed the
way IPython runs it (one shared ``__main__`` namespace, the working directory as it is), and a
failing cell stops the run with its traceback and exit status 1. The generated notebooks use
plain Python only (no magics), so nothing is lost by not having IPython. Standard library only:
it runs with the simulated kernel's interpreter.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any


def code_cells(notebook: dict[str, Any]) -> list[str]:
    """The source of every code cell, in order (nbformat stores a string or a list of lines)."""
    sources = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            sources.append("".join(source) if isinstance(source, list) else source)
    return sources


def run_cells(sources: list[str]) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
    for number, source in enumerate(sources):
        print(f"[cell {number}]", flush=True)
        exec(compile(source, f"<cell {number}>", "exec"), namespace)


def main(argv: list[str]) -> int:
    notebook = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        run_cells(code_cells(notebook))
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
