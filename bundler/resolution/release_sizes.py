"""File sizes without downloading (``SPEC["mode"] == "sizes"``), through pip's own session.

A dry run and the size limits need every file's size before anything is fetched: a local file's
size, else the ``Content-Length`` of a HEAD request made with the session ``pip download`` would
build (credentials, proxies, certificates). Runs in the subprocess, like the downloader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from bundler.resolution.pip_protocol import main, require


def file_size(session: Any, url: str) -> int | None:
    """Bytes of the file at ``url``: a local file's size, else the Content-Length of a HEAD."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        try:
            return Path(url2pathname(parts.path)).stat().st_size
        except OSError:
            return None
    # HEAD only: a GET would start the very download a dry run promises not to make.
    try:
        response = session.head(url, allow_redirects=True, headers={"Accept-Encoding": "identity"})
    except Exception:  # unreachable: the size stays unknown
        return None
    length = response.headers.get("Content-Length", "")
    return int(length) if response.status_code < 400 and length.isdigit() else None


def sizes_with_pip(spec: dict[str, Any], pip_args: list[str]) -> int:
    """Sizes of ``spec["urls"]`` (None where unknown), in parallel, to ``spec["result"]``."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pip._internal.cli.req_command import SessionCommandMixin
    from pip._internal.commands import create_command

    command = create_command("download")
    options, _ = command.parse_args([*pip_args, "--no-cache-dir"])
    build = require(SessionCommandMixin, "_build_session")
    local = threading.local()

    def one(url: str) -> int | None:
        if not hasattr(local, "session"):
            local.session = build(command, options)
        return file_size(local.session, url)

    urls = list(spec["urls"])
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(urls)))) as pool:
        sizes = list(pool.map(one, urls))
    Path(spec["result"]).write_text(
        json.dumps(dict(zip(urls, sizes, strict=True))), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "sizes", sizes_with_pip))
