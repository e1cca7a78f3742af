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


# --- bundler (the online half) --------------------------------------------------------------
class BundlerError(KaggleOfflineError):
    """The bundler cannot produce a wheelhouse; the message says which input to change."""


class UnknownProfileError(ProfileError):
    """A --target names neither a built-in profile nor a profile JSON file."""


class ResolutionError(BundlerError):
    """pip's resolver found no set of versions that satisfies the requirements for the target."""


class NoWheelForTargetError(ResolutionError):
    """A package has no wheel the target accepts (and no pure-Python sdist to build one from)."""


class PreinstalledConflictError(ResolutionError):
    """A transitive requirement would replace a distribution that the kernel image ships."""


class SdistBuildError(BundlerError):
    """An sdist could not be built into a wheel that the target can install."""


class DownloadError(BundlerError):
    """A file could not be fetched or failed its hash check; a re-run resumes where it stopped."""


class PipVersionError(BundlerError):
    """The pip that the bundler drives is outside the range whose internals it was tested with."""


# --- the segmentation engine --------------------------------------------------------------
class DeviceError(KaggleOfflineError):
    """A forced device (--device cuda, cuda:N) cannot run ops here; auto would use the CPU."""


class InferenceError(KaggleOfflineError):
    """Inference cannot go on: bad engine options, or out of memory even on the CPU."""
