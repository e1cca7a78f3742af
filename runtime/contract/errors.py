"""The error hierarchy: every message is one line that names the culprit and the fix.

:class:`KaggleOfflineError` is the base of every error either half raises on purpose; the CLIs
print it as one line and exit 2, without a traceback. The bundler's own errors live in
``bundler.errors`` and subclass these. Standard library only.
"""

from __future__ import annotations


class KaggleOfflineError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero, without a traceback."""


# --- install path -------------------------------------------------------------------------
class ProfileError(KaggleOfflineError):
    """A target profile file is unreadable or incomplete."""


class ManifestError(KaggleOfflineError):
    """A wheelhouse's manifest.json is missing, corrupt or of an unknown format."""


class WheelhouseError(KaggleOfflineError):
    """A wheelhouse is unusable here: a wheel missing from disk, built for another Python..."""


class HashMismatchError(WheelhouseError):
    """A wheel's sha256 differs from its manifest: it was tampered with or truncated."""


class PlanConflictError(KaggleOfflineError):
    """Several wheelhouses (or the kernel) disagree about one package's version."""


class InstallError(KaggleOfflineError):
    """pip failed; what was installed before the failure is reported, and a re-run completes it."""


# --- volumes, models and submissions ------------------------------------------------------
class VolumeError(KaggleOfflineError):
    """A volume cannot be read or written (not a TIFF, truncated, unknown codec, wrong rank)."""


class InputError(KaggleOfflineError):
    """The prediction input is unusable: no volumes found, or ids from test.csv have no file."""


class OutputError(KaggleOfflineError):
    """An output path would overwrite an input or another output, or cannot be written."""


class ModelError(KaggleOfflineError):
    """A model cannot be loaded safely (unknown format, needs arbitrary unpickling, bad config)."""


class SubmissionError(KaggleOfflineError):
    """submission.zip failed validation; the message lists every defect found."""


# --- the segmentation engine --------------------------------------------------------------
class DeviceError(KaggleOfflineError):
    """A forced device (--device cuda, cuda:N) cannot run ops here; auto would use the CPU."""


class InferenceError(KaggleOfflineError):
    """Inference cannot go on: bad engine options, or out of memory even on the CPU."""


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an error's text (or its type name), cut to ``limit`` characters.

    For wrapping a library's multi-line exception into one of our one-line messages.
    """
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Terminated(BaseException):
    """SIGTERM arrived (Kaggle and most schedulers send it before killing).

    A BaseException, as KeyboardInterrupt is, so that no handler of one volume's errors takes
    it for that volume's: it unwinds the whole run, whose ``finally`` blocks write metrics.json
    and remove temporary folders, and the CLI exits 143 (128 + SIGTERM) with one line.
    """
