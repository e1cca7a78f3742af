"""``python -m runtime score PRED LABELS [--json FILE]``: the competition's metric, locally."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.commands import add_batch_arguments, log_to_stderr


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prediction",
        metavar="PRED",
        type=Path,
        help="a submission.zip, or a folder of <id>.tif masks",
    )
    parser.add_argument(
        "labels",
        metavar="LABELS",
        type=Path,
        help="a folder of <id>.tif labels (0 background, 1 surface, 2 ignored), or a root holding train_labels/",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write every figure as JSON to FILE"
    )
    parser.add_argument(
        "--scorer",
        choices=("auto", "official", "local"),
        default="auto",
        help="official: the organizers' topometrics (must be importable); local: this project's "
        "implementation (TopoScore approximate); auto (default): official when importable",
    )
    parser.add_argument(
        "--only-predicted",
        action="store_true",
        help="score only the ids that have a prediction (by default every labelled id needs one)",
    )

    add_batch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from runtime.contract.files import write_json_atomically
    from runtime.volumes.evaluation import score_predictions
    from runtime.volumes.places import check_score_output

    if args.json:
        check_score_output(args.json, args.prediction, args.labels)
    report = score_predictions(
        args.prediction,
        args.labels,
        scorer=args.scorer,
        jobs=args.jobs,
        only_predicted=args.only_predicted,
        log=log_to_stderr,
        progress_bar=args.progress,
    )
    print(report.table())
    if args.json:
        write_json_atomically(args.json, report.to_dict())
        log_to_stderr(f"wrote {args.json}")
    return 0
