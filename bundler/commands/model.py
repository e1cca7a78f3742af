"""``python -m bundler model PATH -o DIR --id OWNER/MODEL``: check a model, write its upload folder."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        type=Path,
        metavar="PATH",
        help="what predict's --model takes: a model folder, its config.json, a "
        "TorchScript or .pt2 file",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="the upload folder to write (new, or one this command wrote before)",
    )
    parser.add_argument(
        "--id",
        dest="model_id",
        required=True,
        metavar="OWNER/MODEL",
        help="the Kaggle model (or, with --as-dataset, dataset) id",
    )
    parser.add_argument("--framework", default="pyTorch", help="the model's framework (pyTorch)")
    parser.add_argument(
        "--variation",
        default="default",
        metavar="NAME",
        help="the model variation's slug (default: default)",
    )
    parser.add_argument(
        "--as-dataset",
        action="store_true",
        help="write a dataset folder (for --model-dataset) instead of a model",
    )
    parser.add_argument("--title", help="title of a new model or dataset (default: from the id)")
    parser.add_argument(
        "--license",
        dest="licence",
        default="Apache 2.0",
        help="the model's licence name, as Kaggle lists them (default Apache 2.0)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no engine decisions")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from bundler.kaggle.model_upload import prepare_model

    log = None if args.quiet else (lambda line: print(f"  {line}", file=sys.stderr))
    upload = prepare_model(
        args.path,
        args.output,
        model_id=args.model_id,
        framework=args.framework,
        variation=args.variation,
        as_dataset=args.as_dataset,
        title=args.title,
        licence=args.licence,
        log=log,
    )
    check = upload.check
    window = "x".join(map(str, check.window))
    kind = "dataset" if args.as_dataset else "model"
    print(f"{kind} upload folder {upload.folder} ({'update' if upload.update else 'new'}):")
    print(
        f"  checked   {check.name} loads and segments one {window} window on the CPU "
        f"({check.seconds:.2f} s, foreground {100 * check.foreground_fraction:.1f}%)"
    )
    print(f"  files     {len(upload.files)}, {upload.size / 1e6:.1f} MB: "
          + ", ".join(upload.files[:8]) + (" ..." if len(upload.files) > 8 else ""))  # fmt: skip
    for note in upload.notes:
        print(f"note: {note}")
    if upload.unchanged:
        print(
            f"nothing to upload: {upload.folder} holds the same files as before this run (if "
            f"they never reached Kaggle: {' && '.join(upload.commands)})"
        )
    else:
        for command in upload.commands:
            print(f"next: {command}")
    print(f"kernel: {upload.kernel_option}")
    print(f"then: {kernel_handoff(args.model_id, upload.kernel_option, args.output)}")
    return 0


# The competition this project's predict is made for (its kernels are written for it).
COMPETITION = "vesuvius-challenge-surface-detection"


def kernel_handoff(model_id: str, model_option: str, output: Path) -> str:
    """The `bundler kernel` command for this model, with what is known filled in: the owner, a
    notebook id and title made from the model's, a wheelhouse built beside it, the competition."""
    from bundler.kaggle.refs import slugify

    owner, _, slug = model_id.partition("/")
    notebook = slugify(f"{slug}-submission")[:50].strip("-")
    title = notebook.replace("-", " ")
    wheelhouse = _wheelhouse_near(Path.cwd(), output.resolve().parent) or f"{owner}/WHEELHOUSE"
    return shlex.join(
        ["python", "-m", "bundler", "kernel", "-o", "kernel", "--id", f"{owner}/{notebook}",
         "--title", title, "--wheelhouse", wheelhouse, "--competition", COMPETITION,
         *model_option.split()]
    )  # fmt: skip


def _wheelhouse_near(*places: Path) -> str | None:
    """The dataset id of the one wheelhouse built in a folder of ``places`` (e.g. ./wheelhouse)."""
    from bundler.wheelhouse.updates import previous_build

    found = set()
    for place in dict.fromkeys(places):
        try:
            folders = [p for p in place.iterdir() if p.is_dir()]
        except OSError:
            continue
        for folder in folders:
            previous = previous_build(folder)
            if previous is not None and previous.dataset_id and previous.hashes:
                found.add(previous.dataset_id)
    return found.pop() if len(found) == 1 else None
