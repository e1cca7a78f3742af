"""Compute the metric reference set's official values once, with the organizers' own scorer.

    PYTHONPATH=$PWD:/path/to/topological-metrics-kaggle/src \\
        python bench/make_metric_reference.py --official-source /path/to/topological-metrics-kaggle

Every pair of ``tests/support/metric_reference.py`` is scored by ``topometrics`` (with its compiled
Betti-Matching-3D) with the competition's parameters; the values, each pair's SHA-256 digests,
the generator's version and the official code's identity (the Betti-Matching-3D commit and the
SHA-256 of each ``topometrics`` source file) go to ``tests/support/metric_reference.json``. The
tests then check our scorer against these values without any C++ build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def official_identity(source: Path) -> dict[str, object]:
    """What identifies the official code that produced the values."""
    package = source / "src" / "topometrics"
    betti = source / "external" / "Betti-Matching-3D"
    commit = subprocess.run(
        ["git", "-C", str(betti), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {
        "betti_matching_3d_commit": commit,
        "topometrics_sha256": {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(package.glob("*.py"))
        },
    }


def main() -> int:
    from runtime.volumes.metric.official import official_score, official_version
    from tests.support.metric_reference import (
        GENERATOR_VERSION,
        REFERENCE_FILE,
        SAMPLE_FILE,
        build_pair,
        cases,
        mask_digest,
        write_sample_arrays,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-source", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=REFERENCE_FILE)
    parser.add_argument(
        "--new-sample", action="store_true", help="rewrite the stored sample-data arrays too"
    )
    args = parser.parse_args()
    if args.new_sample or not SAMPLE_FILE.exists():
        write_sample_arrays()

    pairs = {}
    started = time.perf_counter()
    for case in cases():
        prediction, labels = build_pair(case)
        result = official_score(prediction, labels, volume_id=case["name"])
        pairs[case["name"]] = {
            "case": case,
            "prediction_sha256": mask_digest(prediction),
            "labels_sha256": mask_digest(labels),
            "score": result.score,
            "surface_dice": result.surface_dice,
            "voi_score": result.voi_score,
            "voi_split": result.voi_split,
            "voi_merge": result.voi_merge,
            "topo_score": result.topo_score,
            "topo_counts": {str(k): list(v) for k, v in result.topo_counts.items()},
            "official_seconds": round(result.seconds, 4),
        }
        print(f"{case['name']}: {result.score:.6f} topo {result.topo_score:.4f}", flush=True)
    document = {
        "format": "kaggle-offline-metric-reference",
        "format_version": 1,
        "generator": "tests/support/metric_reference.py",
        "generator_version": GENERATOR_VERSION,
        "official": {**official_identity(args.official_source), "module": official_version()},
        "seconds": round(time.perf_counter() - started, 1),
        "pairs": pairs,
    }
    args.output.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(pairs)} pairs to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
