"""Errors of the bundler (the online half), under the shared :class:`KaggleOfflineError`."""

from __future__ import annotations

from runtime.contract.errors import KaggleOfflineError, ProfileError


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


class KernelConflictError(ResolutionError):
    """The newest release of a request needs another version of a kernel package (the choices
    are in the message: an older release that keeps the kernel, or --allow-replace)."""


class ResolverTimeoutError(ResolutionError):
    """pip's resolver ran past --resolve-timeout (the message says what it was trying)."""


class WheelhouseSizeError(BundlerError):
    """The wheelhouse, or one of its wheels, would exceed a Kaggle dataset size limit."""


class SdistBuildError(BundlerError):
    """An sdist could not be built into a wheel that the target can install."""


class DownloadError(BundlerError):
    """A file could not be fetched or failed its hash check; a re-run resumes where it stopped."""


class PipVersionError(BundlerError):
    """The pip that the bundler drives is outside the range whose internals it was tested with."""


class MetadataBuildError(ResolutionError, SdistBuildError):
    """pip could not build an sdist's metadata while resolving (it names the package and why)."""
