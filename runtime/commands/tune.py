"""``python -m runtime tune PROBABILITIES LABELS [--grid FILE] [-o DIR]``: pick post-processing."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime.commands import add_batch_arguments, log_to_stderr


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "probabilities",
        metavar="PROBABILITIES",
        type=Path,
        help="a folder written by predict --save-probabilities (or fuse)",
    )
    parser.add_argument(
        "labels",
        metavar="LABELS",
        type=Path,
        help="a folder of <id>.tif labels, or a root holding train_labels/",
    )
    parser.add_argument(
        "--grid",
        type=Path,
        metavar="FILE",
        help="a JSON grid of values per axis (default: a staged search of about 55 settings)",
    )
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="where postprocess.json, tune-results.json and tune-plot.png go (default: here)",
    )
    parser.add_argument(
        "--scorer",
        choices=("local", "official", "auto"),
        default="local",
        help="local (default, fast; approximate TopoScore), official (topometrics, about a minute per volume and setting) or auto",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=15,
        metavar="N",
        help="rows of the ranked table to print (default: 15)",
    )

    add_batch_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from runtime.contract.files import write_json_atomically
    from runtime.volumes.places import prepare_tune_output
    from runtime.volumes.plot import line_plot
    from runtime.volumes.tuning import grid_from_file, tune

    grid = grid_from_file(args.grid) if args.grid else None
    prepare_tune_output(args.out, args.probabilities, args.labels, args.grid, log_to_stderr)
    report = tune(
        args.probabilities,
        args.labels,
        grid=grid,
        scorer=args.scorer,
        jobs=args.jobs,
        log=log_to_stderr,
        progress_bar=args.progress,
    )
    print(report.table(args.rows))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(args.out / "postprocess.json", report.postprocess_document())
    write_json_atomically(args.out / "tune-results.json", report.to_dict())
    written = ["postprocess.json", "tune-results.json"]
    series = report.plot_series()
    if series:
        line_plot(
            args.out / "tune-plot.png",
            series,
            title=f"score against threshold ({len(report.volume_ids)} volumes, TopoScore {report.topo_kind})",
            x_label="threshold",
            y_label="score",
        )
        written.append("tune-plot.png")
    log_to_stderr(f"wrote {', '.join(str(args.out / name) for name in written)}")
    print(
        f"next: python -m runtime predict INPUT --model ... --postprocess {args.out / 'postprocess.json'}"
    )
    return 0
