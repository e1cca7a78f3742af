"""The argument parser of ``python -m runtime`` and ``python -m bundler``: errors that help.

argparse reports an unknown option under a subcommand with the *top-level* usage (the
subcommand's parser hands unknown tokens up) and never suggests what was meant. Here an unknown
option is reported by the chosen subcommand's parser, with its usage, and with the closest
option it has (``--thresold`` -> ``--threshold``) or a hint registered for that exact mistake
(``bundler kernel --model`` -> ``--model-source``). Standard library only: ``install`` and
``profile`` run before anything is installed.
"""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["HelpfulParser", "add_option_hint"]

_HINTS = "_kaggle_offline_hints"


class HelpfulParser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown-option errors come from the subcommand, with a suggestion.

    Subparsers made by ``add_subparsers`` on it are HelpfulParsers too.
    """

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            _chosen(self, parsed).error(_unrecognized(_chosen(self, parsed), extras))
        return parsed

    def parse_intermixed_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_intermixed_args(args, namespace)
        if extras:
            self.error(_unrecognized(self, extras))
        return parsed

    def error(self, message: str) -> Any:  # argparse's NoReturn, kept overridable
        choice = re.match(
            r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)$", message
        )
        if choice:
            listed = choice.group(3)
            offered = re.findall(r"'([^']*)'", listed) or [c.strip() for c in listed.split(",")]
            message += _did_you_mean(choice.group(2), offered)
        super().error(message)


def add_option_hint(parser: argparse.ArgumentParser, mistake: str, hint: str) -> None:
    """When ``mistake`` (an option this parser does not have) is given, say ``hint``."""
    hints = dict(getattr(parser, _HINTS, {}))
    hints[mistake] = hint
    setattr(parser, _HINTS, hints)


def _chosen(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest subcommand parser ``parsed`` went through (``parser`` itself if none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            child = action.choices.get(getattr(parsed, action.dest, None) or "")
            if child is not None:
                return _chosen(child, parsed)
    return parser


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    message = f"unrecognized arguments: {' '.join(extras)}"
    options = [token for token in extras if token.startswith("--") and token != "--"]
    if not options:
        return message
    given = options[0].split("=", 1)[0]
    hints: dict[str, str] = getattr(parser, _HINTS, {})
    if given in hints:
        return f"{message}; {hints[given]}"
    known = [
        option
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._VersionAction)
        for option in action.option_strings
        if option.startswith("--")
    ]
    return message + _did_you_mean(given, known)


def _did_you_mean(given: str, offered: list[str]) -> str:
    close = difflib.get_close_matches(given, offered, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
