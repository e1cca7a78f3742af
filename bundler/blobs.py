"""A content-addressed file store: every wheel and sdist the bundler has seen, keyed by sha256.

Files enter only after their hash is checked and only by an atomic rename, so a file in the store
is always whole and right; an interrupted download leaves a ``.part`` file that the next attempt
resumes. Standard library only: pip's process (see :mod:`bundler.resolution.pip_shim`) uses it too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runtime.contract.files import copy_hashing, replacing, sha256_file


def link_or_copy(source: Path, destination: Path, *, link: bool = True) -> None:
    """Put ``source`` at ``destination`` atomically: a hard link where possible, else a copy."""
    with replacing(destination) as temporary:
        if link:
            temporary.unlink()
            try:
                os.link(source, temporary)
                return
            except OSError:  # another file system, or links not allowed: copy instead
                pass
        shutil.copyfile(source, temporary)


class BlobStore:
    """``root/<ab>/<sha256>`` for whole files, ``root/partial/<sha256>.part`` for interrupted ones."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def partial_path(self, sha256: str) -> Path:
        return self.root / "partial" / f"{sha256}.part"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def has_valid(self, sha256: str) -> bool:
        """Present *and* still matching its hash; a damaged file is removed.

        Wheelhouses get copies, but an older kaggle-offline hard-linked them to the store, so an
        in-place edit of such a wheelhouse (or a failing disk) can still change a stored file.
        """
        path = self.path(sha256)
        if not path.is_file():
            return False
        if sha256_file(path) == sha256:
            return True
        path.unlink()
        return False

    def link_to(self, sha256: str, destination: Path) -> None:
        """A hard link where possible: only for files the bundler itself reads, never hands out."""
        link_or_copy(self.path(sha256), destination)

    def copy_to(self, sha256: str, destination: Path) -> str:
        """A copy of its own (editing ``destination`` can never reach the store); returns the
        sha256 of the bytes copied, hashed as they are written, so no one need read them again.
        """
        with replacing(destination) as temporary:
            temporary.unlink()  # copy_hashing creates its target, so that it never truncates one
            digest, _ = copy_hashing(self.path(sha256), temporary)
        return digest

    def add_file(self, source: Path, *, expected_sha256: str | None = None) -> str:
        """Copy ``source`` in (checked against ``expected_sha256`` when given); return its hash."""
        digest = sha256_file(source)
        if expected_sha256 and digest != expected_sha256.lower():
            raise ValueError(
                f"{source.name}: sha256 {digest} does not match the expected {expected_sha256}"
            )
        if not self.has_valid(digest):
            # A copy, never a link: the store must not share bytes with files it does not own
            # (an index folder, --find-links), which an in-place edit of a wheelhouse would reach.
            link_or_copy(source, self.path(digest), link=False)
        return digest

    def commit_partial(self, sha256: str) -> Path:
        """Move a completed ``.part`` file into place (the caller has checked its hash)."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.partial_path(sha256).replace(final)
        return final
