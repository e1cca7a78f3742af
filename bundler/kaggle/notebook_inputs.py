# kaggle-offline: find this notebook's inputs under the input root, and run commands.
#
# Kaggle has mounted attached inputs in two layouts, and both were seen at once:
#   old: <root>/<slug>/, <root>/<model>/<framework>/<variation>/<version>/
#   new: <root>/datasets/<owner>/<slug>/, <root>/competitions/<slug>/,
#        <root>/models/<owner>/<model>/<framework>/<variation>/<version>/
# So no path is written down here: each input is found by a bounded breadth-first search for the
# folder whose path ends the way its Kaggle reference says (the most specific form first). This
# cell runs before anything is installed, so it uses the standard library only. `python -m
# bundler kernel` copies it verbatim from bundler/kaggle/notebook_inputs.py into every notebook it makes.
import subprocess
from collections import deque
from pathlib import Path

MAX_DEPTH = 6  # models/<owner>/<model>/<framework>/<variation>/<version>
MAX_FOLDERS = 5000  # a hard bound: a huge attached tree costs milliseconds, not minutes
# Data trees: never listed (a competition's test_images/ may hold thousands of files).
DATA_FOLDERS = frozenset(
    {"test_images", "train_images", "train_labels", "test_labels", "__MACOSX", "__pycache__"}
)


def input_folders(root):
    """Every folder under ``root`` as (folder, its parts below root), shallowest first."""
    root = Path(root)
    queue = deque([(root, ())])
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
        queue.extend((c, (*parts, c.name)) for c in children if c.name not in DATA_FOLDERS)


def find_mount(root, what, *tails):
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
        f"{what} is not attached: no {looked} under {root} (it holds: {', '.join(tops[:12]) or 'nothing'}); "
        "add it as an input of the notebook (kernel-metadata.json lists it)"
    )


def dataset_mount(root, ref):
    owner, slug = ref.split("/")[:2]
    return find_mount(root, f"dataset {owner}/{slug}", ("datasets", owner, slug), (slug,))


def competition_root(root, slug):
    return find_mount(root, f"competition {slug}", ("competitions", slug), (slug,))


def model_mount(root, ref):
    owner, model, framework, variation, version = ref.split("/")
    return find_mount(
        root,
        f"model {ref}",
        ("models", owner, model, framework, variation, version),
        (model, framework, variation, version),
    )


def model_path(root, kind, ref, inner=""):
    """Where a model given as a model source or as a dataset (and a path in it) is mounted."""
    mount = model_mount(root, ref) if kind == "model" else dataset_mount(root, ref)
    path = mount / inner if inner else mount
    if not path.exists():
        raise FileNotFoundError(f"{ref}: {inner} not found in {mount}")
    return path


def wheelhouse_bootstrap(root, ref):
    """The bootstrap.py of the wheelhouse dataset ``ref``: beside its manifest.json."""
    mount = dataset_mount(root, ref)
    for folder, parts in input_folders(mount):
        bootstrap = folder / "bootstrap.py"
        if len(parts) <= 2 and bootstrap.is_file() and (folder / "manifest.json").is_file():
            return bootstrap
    raise FileNotFoundError(
        f"dataset {ref} is mounted at {mount} but holds no bootstrap.py beside a manifest.json: "
        "upload the whole wheelhouse folder (kaggle datasets create -p DIR --dir-mode zip)"
    )


def run(*command, cwd=None):
    """Run a command with its output streamed into this cell; fail the cell if the command fails."""
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
