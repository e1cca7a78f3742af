"""Offline install speed: kaggle-offline against plain pip, in one run, as ratios.

Two cases, each timed as a whole process (interpreter start included), on the same wheels:

* five packages into fresh virtual environments (a kernel that lacks them):
  ``python -m runtime install --wheelhouse DIR`` against
  ``python -m pip install --no-index --find-links DIR/wheels -r requirements.txt``;
* the no-op (everything already present) in a kernel-like environment with about a thousand
  installed distributions: the same two commands again.

The wheelhouse is made by the real bundler from a file:// index, so nothing here needs a network,
and every command runs inside ``unshare -rn`` (no network at all) where that is available.
By default the five packages are synthetic, each with a realistic number of modules; pass
``--wheels A.whl B.whl ...`` to time real wheels instead (they must need nothing outside the set).

    python bench/bench_install.py [--repeat 5] [--filler 1000] [--wheels ...]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from runtime.contract.manifest import WheelName  # noqa: E402
from runtime.installer.capture import capture_current_profile  # noqa: E402
from tests.support.packages import make_index  # noqa: E402
from tests.support.venvs import Venv, copy_venv, make_template, runtime_source_path  # noqa: E402

FIVE = ("tiledata", "voxelkit", "scrollmath", "inkcurve", "sheetgraph")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def synthetic_wheel(folder: Path, name: str, modules: int = 120) -> Path:
    """A pure-Python wheel shaped like a mid-sized library: a package of ``modules`` modules."""
    version = "1.0.0"
    dist_info = f"{name}-{version}.dist-info"
    body = "".join(
        f"def function_{i}(value: int) -> int:\n    '''Doc {i}.'''\n    return value * {i} + {i}\n\n"
        for i in range(60)
    )
    files = {f"{name}/__init__.py": f'__version__ = "{version}"\n'.encode()}
    for index in range(modules):
        files[f"{name}/module_{index:03}.py"] = (f"# {name} module {index}\n" + body).encode()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            archive.writestr(zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return path


def add_filler_distributions(site_packages: Path, count: int) -> None:
    """``count`` installed-looking distributions, as on a kernel image (metadata, no code)."""
    for index in range(count):
        folder = site_packages / f"kernel_filler_{index:04}-1.{index}.0.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: kernel-filler-{index:04}\nVersion: 1.{index}.0\n"
            + "Summary: filler\n" * 20
        )
        (folder / "RECORD").write_text(f"{folder.name}/METADATA,,\n")
        (folder / "INSTALLER").write_text("pip\n")


def _offline_prefix() -> list[str]:
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    return ["unshare", "-rn"] if probe.returncode == 0 else []


class Commands:
    def __init__(self, house: Path, requirements: Path, prefix: list[str]) -> None:
        self.house = house
        self.requirements = requirements
        self.prefix = prefix
        # Only the runtime package on the path: the checkout may hold build leftovers (egg-info).
        self.env = {**os.environ, "PYTHONPATH": str(runtime_source_path())}
        self.env.pop("PIP_INDEX_URL", None)

    def ours(self, venv: Venv) -> tuple[float, dict[str, object]]:
        argv = [
            str(venv.python),
            "-m",
            "runtime",
            "install",
            "--json",
            "--wheelhouse",
            str(self.house),
        ]
        seconds, stdout = self._timed(argv)
        return seconds, json.loads(stdout)

    def pip(self, venv: Venv) -> float:
        argv = [
            str(venv.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
            "--no-index", "--find-links", str(self.house / "wheels"), "-r", str(self.requirements),
        ]  # fmt: skip
        return self._timed(argv)[0]

    def _timed(self, argv: list[str]) -> tuple[float, str]:
        started = time.perf_counter()
        result = subprocess.run(
            [*self.prefix, *argv], capture_output=True, text=True, env=self.env, check=False
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
        return seconds, result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median shown)")
    parser.add_argument(
        "--filler", type=int, default=1000, help="distributions in the no-op kernel"
    )
    parser.add_argument("--wheels", nargs="+", type=Path, help="real wheels to use instead")
    args = parser.parse_args()

    from bundler import build

    with tempfile.TemporaryDirectory(prefix="bench-install-") as scratch_name:
        scratch = Path(scratch_name)
        dist = scratch / "dist"
        dist.mkdir()
        if args.wheels:
            wheels = [Path(shutil.copy2(w, dist / w.name)) for w in args.wheels]
        else:
            wheels = [synthetic_wheel(dist, name) for name in FIVE]
        names = [WheelName.parse(w.name).name for w in wheels]  # type: ignore[union-attr]
        index_url = make_index(scratch / "index", wheels)
        house = scratch / "wheelhouse"
        build(
            names,
            house,
            # A kernel with nothing of the five preinstalled, like the fresh venvs below.
            target=dataclasses.replace(capture_current_profile("bench-kernel"), preinstalled={}),
            index_url=index_url,
            include_self=False,
            cache_dir=scratch / "cache",
        )
        requirements = scratch / "requirements.txt"
        requirements.write_text("".join(f"{name}\n" for name in names))
        commands = Commands(house, requirements, _offline_prefix())
        template = make_template(scratch / "template")

        # Five packages, fresh venvs, alternating which tool goes first.
        ours_fresh: list[float] = []
        pip_fresh: list[float] = []
        for run in range(args.repeat):
            for tool in ("ours", "pip") if run % 2 == 0 else ("pip", "ours"):
                venv = copy_venv(template, scratch / f"fresh-{tool}-{run}")
                if tool == "ours":
                    seconds, report = commands.ours(venv)
                    assert len(report["installed"]) == len(names), report  # type: ignore[arg-type]
                    ours_fresh.append(seconds)
                else:
                    pip_fresh.append(commands.pip(venv))
                shutil.rmtree(venv.path)

        # No-op in a kernel-like venv: the five present among `--filler` other distributions.
        kernel = copy_venv(template, scratch / "kernel")
        add_filler_distributions(kernel.site_packages, args.filler)
        commands.pip(kernel)
        ours_noop: list[float] = []
        ours_noop_library: list[float] = []
        pip_noop: list[float] = []
        for _ in range(args.repeat):
            seconds, report = commands.ours(kernel)
            assert report["pip_ran"] is False and not report["installed"], report
            ours_noop.append(seconds)
            ours_noop_library.append(report["timings"]["total"])  # type: ignore[index]
            pip_noop.append(commands.pip(kernel))

    rows = [
        ("five packages, fresh venv", statistics.median(ours_fresh), statistics.median(pip_fresh)),
        (
            f"no-op, {args.filler} installed",
            statistics.median(ours_noop),
            statistics.median(pip_noop),
        ),
    ]
    source = "given wheels" if args.wheels else "synthetic wheels, 120 modules each"
    print(
        f"offline install, median of {args.repeat} runs, {len(names)} packages ({source}), "
        f"Python {sys.version.split()[0]}, {'no network (unshare -rn)' if commands.prefix else 'network on'}"
    )
    print(f"{'case':<28} {'kaggle-offline':>15} {'pip':>10} {'pip / ours':>11}")
    for label, ours, pip in rows:
        print(f"{label:<28} {ours:>14.3f}s {pip:>9.3f}s {pip / ours:>10.1f}x")
    print(
        f"no-op inside the library (discovery + plan, no interpreter start): "
        f"{statistics.median(ours_noop_library) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
