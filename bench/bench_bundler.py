"""Bench: the bundler against plain ``pip download`` and ``uv pip compile``, in one run.

    .venv/bin/python bench/bench_bundler.py [--target kaggle-py312] [REQ ...]

Uses the real package registry (pip's own configuration). For the default set (what the runtime
needs beyond the kernel, plus monai: ``imagecodecs monai connected-components-3d``) it times

- the bundler, cold (a fresh temporary cache) and warm (same inputs, same cache);
- plain ``pip download`` with the same target flags (every manylinux tag from 2_35 down,
  ``--only-binary :all:``, ``--python-version``), cold and warm. pip cannot leave out what the
  kernel has, so it is given ``--no-deps`` and the exact pins the bundler chose: the same files,
  fetched the way a careful user would by hand (with its dependencies it would pull torch and its
  CUDA wheels: the bytes are shown from uv's lock, not downloaded);
- ``uv pip compile --python-platform x86_64-manylinux_2_35 --python-version 3.12
  --only-binary :all:``, cold and warm: the speed anchor, it resolves without downloading;
- the same with ``-c`` the kernel's versions (local version labels dropped): what a careful uv
  user would run to keep the kernel's packages. Its packages beyond the kernel are printed beside
  the bundler's, which must agree (``bench_bundler.py nnunetv2`` is the case where the newest
  release would replace the kernel's timm).

Prints a table with each time and its ratio to the bundler's time for the same temperature.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bundler import build  # noqa: E402
from bundler.resolution.profiles import get_profile, manylinux_platforms  # noqa: E402

DEFAULT_SET = ["imagecodecs", "monai", "connected-components-3d"]


def _timed(action: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def _run(command: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"failed: {' '.join(command[:4])} ...: {' | '.join(tail)}")
    return completed


def _pip_download(pins: Sequence[str], dest: Path, python: str, *, cold: bool) -> None:
    platforms = [p for p in manylinux_platforms() if p.startswith("manylinux")]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary", ":all:", "--no-deps", "--python-version", python,
        "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}", "-d", str(dest),
    ]  # fmt: skip
    for platform in platforms:
        command += ["--platform", platform]
    if cold:
        command.append("--no-cache-dir")
    _run([*command, *pins])


def _uv_compile(
    requirements: Sequence[str],
    python: str,
    cache: Path,
    out: Path,
    constraints: Path | None = None,
    only_binary: bool = True,
) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    extra = ["--only-binary", ":all:"] if only_binary else []
    if constraints is not None:
        extra += ["-c", str(constraints)]
    _run(
        [
            uv, "pip", "compile", "--quiet", "--no-python-downloads",
            "--python-platform", "x86_64-manylinux_2_35", "--python-version", python,
            *extra, "--format", "pylock.toml", "--cache-dir", str(cache), "-o", str(out), "-",
        ],
        input="\n".join(requirements) + "\n",
    )  # fmt: skip


def _pylock_beyond(path: Path, preinstalled: dict[str, str]) -> list[str]:
    """``name==version`` of the locked packages that the kernel does not have."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return sorted(
        f"{p['name']}=={p['version']}"
        for p in data.get("packages", [])
        if re.sub(r"[-_.]+", "-", p["name"]).lower() not in preinstalled
    )


def _pylock_bytes(path: Path) -> tuple[int, int]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    packages = data.get("packages", [])
    total = sum(int(wheel.get("size", 0)) for p in packages for wheel in p.get("wheels", []))
    return len(packages), total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", nargs="*", default=DEFAULT_SET)
    parser.add_argument("--target", default="kaggle-py312")
    args = parser.parse_args(argv)
    profile = get_profile(args.target)
    python = profile.python_version
    with tempfile.TemporaryDirectory(prefix="bench-bundler-") as scratch:
        work = Path(scratch)
        os.environ["KAGGLE_OFFLINE_CACHE"] = str(work / "cache")  # fresh: a truly cold run

        def bundle() -> object:
            return build(
                args.requirements, work / "house", target=profile, include_self=False,
                dataset_id="bench/kaggle-offline-bench",
            )  # fmt: skip

        cold_s, cold = _timed(bundle)
        warm_s, warm = _timed(bundle)
        pins = [f"{e.name}=={e.version}" for e in cold.manifest.wheels]  # type: ignore[attr-defined]
        pip_cold_s, _ = _timed(lambda: _pip_download(pins, work / "pip", python, cold=True))
        pip_warm_s, _ = _timed(lambda: _pip_download(pins, work / "pip", python, cold=False))
        lock = work / "pylock.toml"
        uv_cold_s, _ = _timed(lambda: _uv_compile(args.requirements, python, work / "uv", lock))
        uv_warm_s, _ = _timed(lambda: _uv_compile(args.requirements, python, work / "uv", lock))
        uv_count, uv_bytes = _pylock_bytes(lock)
        kernel = work / "kernel-constraints.txt"
        kernel.write_text(
            "".join(f"{n}=={v.split('+')[0]}\n" for n, v in sorted(profile.preinstalled.items()))
        )
        kept = work / "pylock.kernel.toml"
        # Sources allowed: nnunetv2's older releases that keep the kernel's timm are sdists.
        uvc_cold_s, _ = _timed(lambda: _uv_compile(
            args.requirements, python, work / "uvc", kept, kernel, only_binary=False))  # fmt: skip
        uvc_warm_s, _ = _timed(lambda: _uv_compile(
            args.requirements, python, work / "uvc", kept, kernel, only_binary=False))  # fmt: skip
        uv_beyond = _pylock_beyond(kept, dict(profile.preinstalled))

    house_bytes = sum(e.size for e in cold.manifest.wheels)  # type: ignore[attr-defined]
    print(f"set: {' '.join(args.requirements)}  target: {profile.name}")
    print(
        f"bundler vendored {len(cold.manifest.wheels)} wheels, {house_bytes / 1e6:.1f} MB "  # type: ignore[attr-defined]
        f"(skipped {len(cold.manifest.skipped)} preinstalled); cold run downloaded "  # type: ignore[attr-defined]
        f"{cold.downloaded_bytes / 1e6:.1f} MB, warm run {warm.downloaded_bytes} bytes, "  # type: ignore[attr-defined]
        f"warm ran pip: {warm.resolved}"  # type: ignore[attr-defined]
    )
    print(
        f"a preinstalled-unaware resolution (uv) wants {uv_count} packages, "
        f"{uv_bytes / 1e9:.2f} GB (torch and its CUDA wheels)"
    )
    ours = sorted(f"{e.name}=={e.version}" for e in cold.manifest.wheels)  # type: ignore[attr-defined]
    print(f"bundler, beyond the kernel: {' '.join(ours)}")
    print(f"uv -c kernel, beyond it:    {' '.join(uv_beyond)}")
    only_ours = sorted(set(ours) - set(uv_beyond))
    only_uv = sorted(set(uv_beyond) - set(ours))
    print(f"differences: bundler only {only_ours or 'none'}; uv only {only_uv or 'none'}")
    rows = [
        ("kaggle-offline build", cold_s, warm_s),
        ("pip download --no-deps (same pins)", pip_cold_s, pip_warm_s),
        ("uv pip compile (resolve only)", uv_cold_s, uv_warm_s),
        ("uv pip compile -c kernel (resolve only)", uvc_cold_s, uvc_warm_s),
    ]
    print(f"{'tool':<42}{'cold s':>9}{'ratio':>8}{'warm s':>9}{'ratio':>8}")
    for name, cold_time, warm_time in rows:
        print(
            f"{name:<42}{cold_time:>9.2f}{cold_time / cold_s:>8.2f}"
            f"{warm_time:>9.2f}{warm_time / warm_s:>8.2f}"
        )
    print("ratio = tool time / kaggle-offline build time at the same temperature")
    return 0


if __name__ == "__main__":
    sys.exit(main())
