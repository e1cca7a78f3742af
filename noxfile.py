"""Sessions that simulate an offline Kaggle code competition end to end, for real.

    python -m nox -s kaggle                  # bundle -> attach -> offline kernel -> submission.zip
    python -m nox -s kaggle_no_imagecodecs   # the same without imagecodecs: LZW read through Pillow
    python -m nox -s kaggle_old_layout       # /kaggle/input/<slug>/ mounts and a flat wheelhouse
    python -m nox -s tests                   # the test suite (what .ci/run calls)
    python -m nox -s scroll                  # a whole scroll over its memory cap, killed, resumed
    python -m nox -s lint                    # ruff and mypy

The "kernel" is a fresh virtual environment that sees only a simulated Kaggle image (torch, numpy,
scipy, Pillow, tifffile, ...: built once under .nox/_kaggle-image and reused by every session, so
torch is never downloaded twice). Everything the kernel runs, runs inside a network namespace with
no network (`unshare -rn`), over a fake /kaggle/input tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).resolve().parent
KAGGLE_IMAGE = ROOT / ".nox" / "_kaggle-image"
# What a Kaggle image has preinstalled that the runtime uses, besides torch.
KAGGLE_IMAGE_PACKAGES = ("numpy", "scipy", "Pillow", "tifffile", "psutil", "tqdm")
# torch is reused from the host when it has one. Otherwise it is pinned: a bare "torch" pulls the
# newest CUDA build. Where pip only finds CUDA builds of the pin too (plain PyPI on Linux), point
# KAGGLE_OFFLINE_TORCH_INDEX_URL at a CPU wheel index (https://download.pytorch.org/whl/cpu).
TORCH_REQUIREMENT = "torch==2.13.0"
DYNAMIC_NETWORK_ARCHITECTURES = "dynamic-network-architectures>=0.4.4,<0.5"  # nnunetv2 2.8's range
TORCH_INDEX_VARIABLE = "KAGGLE_OFFLINE_TORCH_INDEX_URL"
MYPY = "mypy==2.4.1"
COMPETITION = "vesuvius-challenge-surface-detection"
DATASET_OWNER, DATASET_SLUG = "kaggle-offline-demo", "kaggle-offline-wheels"
MODEL_SLUG, MODEL_VARIATION = "demo-unet", "default"
MODEL_SOURCE = f"{DATASET_OWNER}/{MODEL_SLUG}/pyTorch/{MODEL_VARIATION}/1"
KERNEL_ID, KERNEL_TITLE = f"{DATASET_OWNER}/offline-submission", "Offline submission"
# A predict option for the generated notebook, checked in metrics.json: options reach predict.
KERNEL_PREDICT_OPTIONS = ("--min-component-voxels", "16")
NOTEBOOK_RUNNER = ROOT / "tests" / "support" / "notebooks.py"
# Variables that would let the kernel's pip see this machine's indexes or find-links.
_PIP_LEAKS = ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONFIG_FILE")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and formatting), then mypy (what it checks: [tool.mypy] in pyproject.toml)."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # mypy checks against the real libraries: torch, numpy and scipy from the simulated image (as
    # `tests` does), the extras for the rest. Pinned: a new release may find new errors.
    _attach_kaggle_image(session, Path(session.virtualenv.location))
    session.install("-e", ".[bundler,predict,scroll]", MYPY)
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, offline. Extra arguments go to pytest (e.g. -- -k installer -x)."""
    _attach_kaggle_image(session, Path(session.virtualenv.location))
    session.install("-e", ".[test]")
    # The nnU-Net tests build real dynamic-network-architectures U-Nets. Its unet.py needs only
    # torch; its timm pin would pull torchvision and a CUDA torch, hence --no-deps.
    session.install("--no-deps", DYNAMIC_NETWORK_ARCHITECTURES)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def scroll(session: nox.Session) -> None:
    """The whole-scroll flow: a synthetic OME-Zarr 2.7x the memory cap of every process (4 GiB
    under 1.5 GiB by default), predict killed with SIGKILL halfway and resumed; extra arguments
    go to tests/support/scroll_flow.py (e.g. -- --side 4096 for 32 GiB)."""
    _attach_kaggle_image(session, Path(session.virtualenv.location))
    session.install("-e", ".[predict,scroll]")
    workdir = Path(session.create_tmp()) / "scroll-flow"
    session.run("python", "tests/support/scroll_flow.py", str(workdir), *session.posargs)


@nox.session
def kaggle(session: nox.Session) -> None:
    """The README's main job: wheelhouse -> offline kernel -> validated submission.zip."""
    _simulate_kaggle(session, _Scenario(name="kaggle"))


@nox.session
def kaggle_no_imagecodecs(session: nox.Session) -> None:
    """As `kaggle`, with imagecodecs left out: the LZW inputs must be read through Pillow."""
    _simulate_kaggle(session, _Scenario(name="kaggle_no_imagecodecs", imagecodecs=False))


@nox.session
def kaggle_old_layout(session: nox.Session) -> None:
    """As `kaggle`, with the old /kaggle/input/<slug>/ layout and a flat wheelhouse upload."""
    _simulate_kaggle(session, _Scenario(name="kaggle_old_layout", layout="old"))


# --- the simulation -------------------------------------------------------------------------


@dataclass
class _Scenario:
    name: str
    imagecodecs: bool = True
    layout: str = "new"  # "new": datasets/<owner>/<slug>/ + competitions/<slug>/; "old": <slug>/
    timings: dict[str, float] = field(default_factory=dict)


def _simulate_kaggle(session: nox.Session, scenario: _Scenario) -> None:
    work = Path(session.create_tmp()).resolve() / "kaggle"
    if work.exists():
        shutil.rmtree(work)
    upload, input_root, working = work / "upload", work / "input", work / "working"
    for folder in (upload, input_root, working):
        folder.mkdir(parents=True)

    with _timed(scenario, "environments"):
        image_paths = _attach_kaggle_image(session, Path(session.virtualenv.location))
        session.install("-e", ".[bundler]")
        kernel_python = _fresh_kernel(session, work / "kernel", image_paths)

    with _timed(scenario, "profile"):
        profile = work / "kernel-profile.json"
        _run_in_kernel(session, kernel_python, ["-m", "runtime", "profile", "-o", str(profile)],
                       pythonpath=_runtime_sources(work), offline=False)  # fmt: skip

    with _timed(scenario, "bundle"):
        requirements = ["imagecodecs"] if scenario.imagecodecs else []
        optional = ["--optional", "imagecodecs"] if scenario.imagecodecs else []
        session.run(
            "python", "-m", "bundler", "build", *requirements, *optional,
            "--target", str(profile), "-o", str(upload),
            "--dataset-id", f"{DATASET_OWNER}/{DATASET_SLUG}", "--title", "kaggle-offline wheels",
        )  # fmt: skip
        session.run("python", "-m", "bundler", "verify", str(upload), "--target", str(profile))

    with _timed(scenario, "model"):
        model_upload = _model_upload(session, work)

    with _timed(scenario, "kernel"):
        notebook = _kernel_folder(session, work / "notebook")

    with _timed(scenario, "attach"):
        competition = _attach_inputs(session, scenario, upload, model_upload, input_root)

    # The notebook that `kaggle kernels push` would upload, its code cells run for real by the
    # kernel's Python, offline, over the fake /kaggle/input: bootstrap, doctor, predict, check.
    offline_env = {"KAGGLE_OFFLINE_INPUT_ROOT": str(input_root),
                   "KAGGLE_OFFLINE_WORKING_DIR": str(working)}  # fmt: skip
    with _timed(scenario, "notebook"), session.chdir(working):
        notebook_output = _run_in_kernel(
            session, kernel_python, [str(NOTEBOOK_RUNNER), str(notebook)], env=offline_env
        )

    if not scenario.imagecodecs:
        _run_in_kernel(session, kernel_python,
                       ["-c", "import importlib.util as u, sys; sys.exit(u.find_spec('imagecodecs') is not None)"])  # fmt: skip

    submission = working / "submission.zip"
    with _timed(scenario, "validate"):
        verdict = _validate_submission(session, submission, competition / "test_images")

    # The sample's labels belong to its test volumes: score the submission in the kernel, offline,
    # with what the image has (scipy; no connected-components-3d, no topometrics).
    with _timed(scenario, "score"), session.chdir(working):
        _run_in_kernel(session, kernel_python,
                       ["-m", "runtime", "score", str(submission), str(competition / "train_labels"),
                        "--json", str(working / "score.json")], env=offline_env)  # fmt: skip

    _print_summary(session, scenario, notebook_output, verdict, work, submission)


def _model_upload(session: nox.Session, work: Path) -> Path:
    """`bundler model` on a copy of the demo model, as a user would on their own model folder."""
    model = work / "my-model"
    model.mkdir()
    for name in ("config.json", "weights.pt"):
        shutil.copy2(ROOT / "runtime" / "samples" / "demo" / name, model / name)
    upload = work / "model-upload"
    output = session.run(
        "python", "-m", "bundler", "model", str(model), "-o", str(upload),
        "--id", f"{DATASET_OWNER}/{MODEL_SLUG}", "--framework", "pyTorch",
        "--variation", MODEL_VARIATION, "-q", silent=True,
    )  # fmt: skip
    print(output, end="")
    if f"kernel: --model-source {MODEL_SOURCE}" not in str(output):
        session.error(f"bundler model did not print --model-source {MODEL_SOURCE}")
    return upload


def _kernel_folder(session: nox.Session, folder: Path) -> Path:
    """`bundler kernel` for the simulated dataset, competition and model; returns the notebook."""
    session.run(
        "python", "-m", "bundler", "kernel", "-o", str(folder), "--id", KERNEL_ID,
        "--title", KERNEL_TITLE, "--wheelhouse", f"{DATASET_OWNER}/{DATASET_SLUG}",
        "--competition", COMPETITION, "--model-source", MODEL_SOURCE, "--cpu",
        *KERNEL_PREDICT_OPTIONS,
    )  # fmt: skip
    metadata = json.loads((folder / "kernel-metadata.json").read_text())
    expected = {
        "enable_internet": False,
        "dataset_sources": [f"{DATASET_OWNER}/{DATASET_SLUG}"],
        "competition_sources": [COMPETITION],
        "model_sources": [MODEL_SOURCE],
    }
    wrong = {k: metadata.get(k) for k, v in expected.items() if metadata.get(k) != v}
    if wrong:
        session.error(f"kernel-metadata.json does not attach what the simulation mounts: {wrong}")
    notebook = folder / metadata["code_file"]
    cells = json.loads(notebook.read_text())["cells"]
    if any(cell.get("outputs") for cell in cells):
        session.error(f"{notebook} holds outputs")
    return notebook


def _attach_inputs(
    session: nox.Session, scenario: _Scenario, upload: Path, model_upload: Path, input_root: Path
) -> Path:
    """Lay out the fake /kaggle/input tree the way Kaggle mounts the kernel's sources."""
    if scenario.layout == "new":
        wheelhouse = input_root / "datasets" / DATASET_OWNER / DATASET_SLUG
        competition = input_root / "competitions" / COMPETITION
        model = input_root / "models" / DATASET_OWNER / MODEL_SLUG
        # `kaggle datasets create --dir-mode zip` keeps sub-folders: the wheelhouse arrives as built.
        shutil.copytree(upload, wheelhouse, ignore=shutil.ignore_patterns("*-metadata.json"))
    else:
        wheelhouse = input_root / DATASET_SLUG
        competition = input_root / COMPETITION
        model = input_root / MODEL_SLUG
        # A flat upload: every file at the dataset's top level, no wheels/ folder.
        wheelhouse.mkdir(parents=True)
        for path in upload.rglob("*"):
            if path.is_file() and not path.name.endswith("-metadata.json"):
                shutil.copy2(path, wheelhouse / path.name)
    # Model mounts use the framework in lower case; the CLI never uploads *-metadata.json files.
    shutil.copytree(model_upload, model / "pytorch" / MODEL_VARIATION / "1",
                    ignore=shutil.ignore_patterns("*-metadata.json"))  # fmt: skip
    session.run("python", "-m", "runtime", "sample", "-o", str(competition), "--n", "3")
    return competition


def _validate_submission(session: nox.Session, submission: Path, test_images: Path) -> dict:
    """Read the zip back independently: every mask with tifffile *and* Pillow, against its input."""
    script = r"""
import io, json, sys, zipfile
from pathlib import Path
import numpy as np, tifffile
from PIL import Image, ImageSequence
from runtime.volumes.submission import validate_submission
from runtime.volumes.tiff import read_volume

zip_path, images = Path(sys.argv[1]), Path(sys.argv[2])
expected = {p.stem: read_volume(p).shape for p in sorted(images.glob("*.tif"))}
problems = list(validate_submission(zip_path, expected))
with zipfile.ZipFile(zip_path) as archive:
    for name in archive.namelist():
        data = archive.read(name)
        by_tifffile = tifffile.imread(io.BytesIO(data))
        by_pillow = np.stack([np.array(p) for p in ImageSequence.Iterator(Image.open(io.BytesIO(data)))])
        if not np.array_equal(by_tifffile, by_pillow):
            problems.append(f"{name}: tifffile and Pillow read different masks")
print(json.dumps({"volumes": len(expected), "problems": problems}))
"""
    output = session.run(
        "python", "-c", script, str(submission), str(test_images), silent=True, log=False
    )
    verdict = json.loads(str(output).strip().splitlines()[-1])
    if verdict["problems"]:
        session.error("submission.zip is invalid: " + "; ".join(verdict["problems"]))
    return verdict


def _print_summary(
    session: nox.Session,
    scenario: _Scenario,
    notebook_output: str,
    verdict: dict,
    work: Path,
    submission: Path,
) -> None:
    metrics_path = submission.with_name("metrics.json")
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    said = notebook_output.splitlines()
    bootstrap_line = next(
        (line for line in reversed(said) if line.startswith("kaggle-offline:")), "?"
    )
    decoders = sorted({volume.get("decoder", "?") for volume in metrics.get("volumes", [])})
    if not scenario.imagecodecs and decoders != ["pillow"]:
        session.error(f"without imagecodecs every volume must be read by Pillow, got {decoders}")
    postprocess = metrics.get("run", {}).get("options", {}).get("postprocess", {})
    if postprocess.get("min_component_voxels") != int(KERNEL_PREDICT_OPTIONS[1]):
        session.error(f"the notebook's predict options did not reach predict: {postprocess}")
    checked = next((line for line in said if line.startswith(f"{submission}: valid")), None)
    if checked is None:
        session.error("the notebook's last cell did not report a valid submission.zip")
    lines = [
        f"{scenario.name}: submission.zip is valid ({verdict['volumes']} volumes)",
        f"  notebook: {work / 'notebook'} ran cell by cell in the kernel; it says: {checked}",
        f"  bootstrap: {bootstrap_line}",
        f"  volumes read by: {', '.join(decoders) or '?'}",
        "  timings: "
        + ", ".join(f"{step} {seconds:.1f}s" for step, seconds in scenario.timings.items()),
        f"  offline: {_offline_description()}",
        f"  submission: {submission} ({submission.stat().st_size} bytes)",
        f"  metrics: {metrics_path}" if metrics else "  metrics: (none written)",
        f"  wheelhouse: {work / 'upload'}  model: {work / 'model-upload'}  inputs: {work / 'input'}",
    ]
    session.log("\n".join(lines))


# --- environments ----------------------------------------------------------------------------


def _attach_kaggle_image(session: nox.Session, venv: Path) -> list[str]:
    """Make the simulated Kaggle image's packages visible in `venv`, as a kernel's dist-packages.

    A .pth file adds the image's site directories to sys.path: pip and importlib.metadata see
    those packages as installed, but nothing is ever installed into them.
    """
    image_paths = _kaggle_image(session)
    purelib = _purelib(_python_of(venv))
    (Path(purelib) / "_kaggle_image.pth").write_text("\n".join(image_paths) + "\n")
    return image_paths


def _kaggle_image(session: nox.Session) -> list[str]:
    """Build the simulated image once (torch included) and reuse it; returns its site dirs."""
    return build_kaggle_image(
        KAGGLE_IMAGE,
        Path(sys.executable),
        run=lambda argv: session.run(*argv, external=True),
        log=session.log,
    )


def build_kaggle_image(
    image: Path,
    host_python: Path,
    *,
    run: Callable[[list[str]], object],
    log: Callable[[str], object],
    packages: Sequence[str] = KAGGLE_IMAGE_PACKAGES,
) -> list[str]:
    """The simulated image at ``image``, built once by ``host_python`` (the Python running nox).

    torch is reused from ``host_python`` when it has one, wherever it has it: in its own
    site-packages or in a virtual environment's. Its installed files (and those of its
    dependencies) are linked into the image's site-packages, so the image has that torch as an
    installed distribution; a ``--system-site-packages`` venv would see only the *base*
    interpreter's packages, which is not where a venv's torch is. Without a host torch,
    ``torch==2.13.0`` is installed into the image.
    """
    host_torch = _host_torch(host_python)
    if host_torch:
        torch_source = f"host torch {host_torch['version']} ({len(host_torch['entries'])} entries)"
        torch_source += f" from {host_torch['root']}"
    else:
        torch_source = TORCH_REQUIREMENT
    wanted = "\n".join(("image-format 3", torch_source, *packages))
    stamp = image / ".complete"
    python = _python_of(image)
    if not (stamp.exists() and stamp.read_text() == wanted and python.exists()):
        log(
            f"building the simulated Kaggle image once, in {image}: {torch_source} and "
            f"{', '.join(packages) or 'nothing else'} (about a minute; pip's progress follows)"
        )
        # No pip or setuptools of its own: a second setuptools on the kernels' sys.path confuses
        # distutils, which torch.compile's C++ toolchain imports. The host's pip installs into it.
        run([str(host_python), "-m", "venv", "--clear", "--without-pip", str(image)])
        requirements = list(packages)
        extra: list[str] = []
        if host_torch:
            site_packages = Path(_purelib(python))
            for entry in map(Path, host_torch["entries"]):
                (site_packages / entry.name).symlink_to(entry)
        else:
            requirements.insert(0, TORCH_REQUIREMENT)
            if os.environ.get(TORCH_INDEX_VARIABLE):
                extra = ["--extra-index-url", os.environ[TORCH_INDEX_VARIABLE]]
        if requirements:
            # Not -q: torch alone is hundreds of MB, and a minute of silence looks like a hang.
            run([str(host_python), "-m", "pip", "--python", str(python), "install",
                 *extra, *requirements])  # fmt: skip
        stamp.write_text(wanted)
    output = subprocess.run(
        [str(python), "-c", "import site, sys; print('\\n'.join(site.getsitepackages()))"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [line for line in output.splitlines() if line.strip()]


# Run by the host Python: torch's installed files and those of everything it requires (extras
# aside), as importlib.metadata records them; the top-level entries of each, to be linked.
_TORCH_CLOSURE = r"""
import importlib.metadata as metadata, json, re
try:
    torch = metadata.distribution("torch")
except metadata.PackageNotFoundError:
    print("null")
    raise SystemExit
entries, seen, queue = set(), set(), ["torch"]
while queue:
    name = re.sub(r"[-_.]+", "-", queue.pop()).lower()
    if name in seen:
        continue
    seen.add(name)
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue  # an optional or platform-specific dependency this host does not have
    root = dist.locate_file("")
    for file in dist.files or ():
        if file.parts and file.parts[0] not in ("..", "__pycache__"):
            entries.add(str(root / file.parts[0]))
    queue += [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in dist.requires or () if "extra ==" not in r]
print(json.dumps({"version": torch.version, "root": str(torch.locate_file("")), "entries": sorted(entries)}))
"""


def _host_torch(host_python: Path) -> dict | None:
    """The host's torch: its version, where it is installed and what to link, or None."""
    output = subprocess.run(
        [str(host_python), "-c", _TORCH_CLOSURE], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output)


def _fresh_kernel(session: nox.Session, location: Path, image_paths: list[str]) -> Path:
    """A new kernel: an empty virtual environment (with pip, as Kaggle has) over the image."""
    session.run(sys.executable, "-m", "venv", str(location), external=True, silent=True)
    python = _python_of(location)
    (Path(_purelib(python)) / "_kaggle_image.pth").write_text("\n".join(image_paths) + "\n")
    return python


def _runtime_sources(work: Path) -> Path:
    """A folder holding only the runtime package, for capturing the kernel's profile.

    The kernel has nothing of ours installed; putting the checkout itself on sys.path would
    leak build metadata of the checkout into the captured profile.
    """
    folder = work / "runtime-sources"
    shutil.copytree(
        ROOT / "runtime", folder / "runtime", ignore=shutil.ignore_patterns("__pycache__")
    )
    return folder


def _run_in_kernel(
    session: nox.Session,
    python: Path,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    pythonpath: Path | None = None,
    offline: bool = True,
) -> str:
    """Run the kernel's Python, inside a network namespace with no network when `offline`."""
    kernel_env: dict[str, str | None] = {name: None for name in _PIP_LEAKS}
    kernel_env.update(env or {})
    kernel_env["PIP_CONFIG_FILE"] = os.devnull
    kernel_env["PYTHONPATH"] = str(pythonpath) if pythonpath else None
    prefix: list[str] = []
    if offline:
        if _unshare_works():
            prefix = ["unshare", "-rn"]
        else:
            # No network namespace here: block pip's network access as well as we can, and say so.
            kernel_env.update({"PIP_NO_INDEX": "1", "https_proxy": "http://127.0.0.1:9",
                               "http_proxy": "http://127.0.0.1:9", "no_proxy": ""})  # fmt: skip
    output = session.run(*prefix, str(python), *args, env=kernel_env, external=True, silent=True)
    text = str(output or "")
    print(text, end="" if text.endswith("\n") else "\n")
    return text


def _offline_description() -> str:
    if _unshare_works():
        return "kernel commands ran in a network namespace with no network (unshare -rn)"
    return "unshare -rn unavailable: FALLBACK, pip blocked by PIP_NO_INDEX and a dead proxy only"


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    result = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    return result.returncode == 0


def _python_of(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _purelib(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


class _timed:
    def __init__(self, scenario: _Scenario, step: str) -> None:
        self.scenario, self.step = scenario, step

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.scenario.timings[self.step] = time.perf_counter() - self.start
