# Find the wheelhouse's bootstrap.py, and run commands with their output shown in this notebook.
# Nothing of kaggle-offline is installed yet, so this is standard library only. Kaggle mounts a
# dataset at <root>/datasets/<owner>/<slug>/, or at <root>/<slug>/ in older notebooks.
import subprocess
from pathlib import Path


def wheelhouse_bootstrap(root, ref):
    """The bootstrap.py of the wheelhouse dataset `ref` (owner/slug), beside its manifest.json."""
    owner, slug = ref.split("/")[:2]
    for mount in (Path(root) / "datasets" / owner / slug, Path(root) / slug):
        for bootstrap in (mount / "bootstrap.py", *sorted(mount.glob("*/bootstrap.py"))):
            if bootstrap.is_file() and (bootstrap.parent / "manifest.json").is_file():
                return bootstrap
    raise FileNotFoundError(
        f"the wheelhouse dataset {ref} is not attached: no bootstrap.py beside a manifest.json in "
        f"{root}/datasets/{owner}/{slug}/ or {root}/{slug}/ (add the dataset as an input)"
    )


def run(*command, cwd=None):
    """Run a command, its output streamed here; the cell fails when the command fails."""
    argv = [str(part) for part in command]
    print("$", " ".join(argv), flush=True)
    process = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    for line in process.stdout:
        print(line, end="", flush=True)
    if process.wait() != 0:
        name = " ".join(argv[2:4]) if argv[1:2] == ["-m"] else Path(argv[1]).name
        raise RuntimeError(
            f"{name} failed (exit status {process.returncode}); see its output above"
        )
