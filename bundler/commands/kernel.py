"""``python -m bundler kernel -o DIR --id OWNER/SLUG ...``: the folder for ``kaggle kernels push``.

The predict options come from :func:`runtime.commands.predict.add_predict_options`, the very
definitions ``python -m runtime predict`` parses with, so a typo or a bad value fails here with
predict's own message before anything is written. They reach the notebook as the exact tokens
given (every option needs its full name here, so the tokens mean the same thing to predict).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bundler.kaggle import refs
from runtime.commands.parsing import add_option_hint

_USAGE_EXAMPLE = (
    "example: python -m bundler kernel -o kernel --id alice/vesuvius-offline "
    '--title "Vesuvius offline" --wheelhouse alice/vesuvius-wheels '
    "--competition vesuvius-challenge-surface-detection "
    "--model-source alice/vesuvius-unet/pyTorch/default/1 --tta 0,1,2 --time-budget 8h"
)


class _AppendModel(argparse.Action):
    """--model-source and --model-dataset into one list, in the order given (ensemble weights)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
        option_string: str | None = None,
    ) -> None:  # fmt: skip
        setattr(namespace, self.dest, [*getattr(namespace, self.dest, []), (self.const, values)])


def configure(parser: argparse.ArgumentParser) -> None:
    from runtime.commands.predict import add_predict_options

    parser.epilog = _USAGE_EXAMPLE
    _add_kernel_arguments(parser)
    add_predict_options(parser, model_option=False)
    add_option_hint(
        parser,
        "--model",
        "a kernel's models are Kaggle inputs, not paths: --model-source "
        "OWNER/MODEL/FRAMEWORK/VARIATION/VERSION (python -m bundler model prints it) or "
        "--model-dataset OWNER/DATASET[/PATH]",
    )


def _add_kernel_arguments(parser: argparse.ArgumentParser) -> None:
    kernel = parser.add_argument_group("kernel")
    kernel.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder to write the notebook and kernel-metadata.json into",
    )
    kernel.add_argument(
        "--id",
        dest="kernel_id",
        required=True,
        metavar="OWNER/SLUG",
        help="the notebook's Kaggle id",
    )
    kernel.add_argument(
        "--title",
        required=True,
        help="the notebook's title (at least 5 characters; its slug should be --id's)",
    )
    kernel.add_argument(
        "--wheelhouse",
        required=True,
        metavar="OWNER/DATASET",
        help="the wheelhouse dataset (python -m bundler build --dataset-id)",
    )
    kernel.add_argument(
        "--competition",
        required=True,
        metavar="SLUG",
        help="the competition's slug, e.g. vesuvius-challenge-surface-detection",
    )
    kernel.add_argument(
        "--model-source",
        dest="kernel_models",
        action=_AppendModel,
        const="model",
        default=[],
        metavar="OWNER/MODEL/FRAMEWORK/VARIATION/VERSION",
        help="a Kaggle model to predict with (python -m bundler model prints it); "
        "repeat, or mix with --model-dataset, for an ensemble",
    )
    kernel.add_argument(
        "--model-dataset",
        dest="kernel_models",
        action=_AppendModel,
        const="dataset",
        default=[],
        metavar="OWNER/DATASET[/PATH]",
        help="a model uploaded as a dataset (python -m bundler model --as-dataset)",
    )
    machine = kernel.add_mutually_exclusive_group()
    machine.add_argument(
        "--accelerator",
        default=refs.DEFAULT_ACCELERATOR,
        metavar="ID",
        help=f"GPU: {', '.join(refs.GPU_ACCELERATORS)} (default {refs.DEFAULT_ACCELERATOR})",
    )
    machine.add_argument("--cpu", action="store_true", help="run without a GPU")
    kernel.add_argument("--public", action="store_true", help="make the notebook public")
    kernel.add_argument("--docker-image-pinning", choices=("original", "latest"),
                        default="original",
                        help="keep the image the notebook was first pushed with (original, "
                        "default: the environment the wheelhouse was built for) or the latest")  # fmt: skip


def predict_tokens(argv: Sequence[str]) -> list[str]:
    """The predict options among a ``kernel`` command line, exactly as typed."""
    tokens = list(argv)
    if "kernel" in tokens:
        tokens = tokens[tokens.index("kernel") + 1 :]
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_kernel_arguments(own)
    _, extras = own.parse_known_args(tokens)
    return extras


def shown_command(argv: Sequence[str]) -> list[str]:
    """``argv`` for the notebook to show: the output folder by its name, not this machine's path."""
    shown, output_next = [], False
    for token in argv:
        if output_next:
            token, output_next = Path(token).name or token, False
        elif token in ("-o", "--output"):
            output_next = True
        elif token.startswith("--output="):
            token = "--output=" + (Path(token.partition("=")[2]).name)
        elif token.startswith("-o") and len(token) > 2 and not token.startswith("--"):
            token = "-o" + Path(token[2:]).name
        shown.append(token)
    return shown


def run(args: argparse.Namespace) -> int:
    from bundler.kaggle.kernel import KernelRequest, write_kernel

    options = predict_tokens(args.argv)
    request = KernelRequest(
        kernel_id=args.kernel_id,
        title=args.title,
        wheelhouse=args.wheelhouse,
        competition=args.competition,
        models=args.kernel_models,
        predict_options=options,
        accelerator=None if args.cpu else args.accelerator,
        private=not args.public,
        docker_image_pinning=args.docker_image_pinning,
    )
    command = "python -m bundler " + shlex.join(
        shown_command(
            args.argv[args.argv.index("kernel") :] if "kernel" in args.argv else args.argv
        )
    )
    result = write_kernel(args.output, request, command=command)
    meta = result.metadata
    machine = f"GPU {meta['machine_shape']}" if meta["enable_gpu"] else "CPU"
    models = [text for _, text in args.kernel_models]
    print(f"kernel folder {result.folder} for {meta['id']} ({meta['title']!r}):")
    print(f"  notebook  {result.notebook}: bootstrap, doctor, predict, validation; no outputs")
    print(f"  inputs    datasets {', '.join(meta['dataset_sources'])}; competition "
          f"{', '.join(meta['competition_sources'])}; models {', '.join(models)}")  # fmt: skip
    print(f"  runs on   {machine}, internet off, {'private' if meta['is_private'] else 'public'}")
    print(f"  predict   {shlex.join(options) if options else '(predict defaults)'}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"next: {result.push_command}")
    print(f"then: kaggle competitions submit {meta['competition_sources'][0]} -k {meta['id']} "
          "-v VERSION -f submission.zip -m MESSAGE   (VERSION: the version the push made, "
          "once it has run)")  # fmt: skip
    return 0
