"""Errors of the kernel side. Every message is one line that names the culprit and the fix."""

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


class ModelError(KaggleOfflineError):
    """A model cannot be loaded safely (unknown format, needs arbitrary unpickling, bad config)."""


class SubmissionError(KaggleOfflineError):
    """submission.zip failed validation; the message lists every defect found."""
