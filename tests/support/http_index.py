"""A real HTTP package index on 127.0.0.1 for download tests: Range requests, PEP 658, failures.

It serves a ``make_index`` folder. With ``core_metadata=True`` its project pages carry
``data-core-metadata`` (PEP 658/714) and ``<wheel>.metadata`` files, as PyPI does, so pip resolves
without downloading wheels. ``cut_after[filename] = n`` makes the next response for that file stop
after ``n`` bytes (a dropped connection) while promising the full length. A Range that starts at
or beyond the end gets 416 with ``Content-Range: bytes */LENGTH`` (RFC 9110 15.5.17).
``credentials=("user", "secret")`` makes every request without that Basic authorization a 401.
HEAD requests (sizes before downloading, pip's range-request metadata) are kept in ``heads``, apart
from ``requests``, and answered with the length only with ``answer_head=True`` (else 501).

``serve_proxy()`` is a forward HTTP proxy on 127.0.0.1 that records every URL it relays, to
prove that a client really went through it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class IndexServer:
    root: Path  # the folder holding simple/
    url: str = ""  # .../simple
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    cut_after: dict[str, int] = field(default_factory=dict)
    credentials: tuple[str, str] | None = None
    refused: int = 0  # requests answered 401 for want of the credentials
    heads: list[str] = field(default_factory=list)  # paths asked with HEAD (sizes, lazy wheels)
    answer_head: bool = False  # off: HEAD gets 501, as from a minimal server

    def count(self, filename: str) -> int:
        return sum(1 for path, _ in self.requests if path.endswith("/" + filename))


def _wheel_metadata(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(member)


def add_core_metadata(root: Path) -> None:
    """Rewrite each project page of a ``make_index`` tree to offer PEP 658 metadata files."""
    for page in (root / "simple").glob("*/index.html"):
        text = page.read_text()
        for wheel in page.parent.glob("*.whl"):
            data = _wheel_metadata(wheel)
            (page.parent / f"{wheel.name}.metadata").write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            text = re.sub(
                rf'<a href="{re.escape(html.escape(wheel.name))}#',
                f'<a data-core-metadata="sha256={digest}" href="{html.escape(wheel.name)}#',
                text,
            )
        page.write_text(text)


def _handler(server_state: IndexServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            # As PyPI answers: the length and range support, no body (no credentials case).
            path_only = self.path.split("?", 1)[0]
            server_state.heads.append(path_only)
            if not server_state.answer_head:
                self.send_error(501)
                return
            path = server_state.root / path_only.lstrip("/")
            if path.is_dir():
                path = path / "index.html"
            if server_state.credentials is not None or not path.is_file():
                self.send_error(404 if server_state.credentials is None else 401)
                return
            self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            path_only = (
                "/" + self.path.split("://", 1)[-1].split("/", 1)[-1]
                if "://" in self.path
                else self.path
            )
            server_state.requests.append((path_only, range_header))
            if server_state.credentials is not None:
                user, password = server_state.credentials
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {token}":
                    server_state.refused += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="index"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            relative = path_only.split("?", 1)[0].lstrip("/")
            path = server_state.root / relative
            if path.is_dir():
                path = path / "index.html"
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            if match and int(match.group(1)) >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if match:
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            kind = "text/html" if path.suffix == ".html" else "application/octet-stream"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            body = data[start:]
            cut = server_state.cut_after.pop(path.name, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a threaded server running ``handler`` until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_index(root: Path, *, answer_head: bool = False) -> Iterator[IndexServer]:
    """Serve ``root`` (which holds ``simple/``) on a free port of 127.0.0.1 until the block ends."""
    state = IndexServer(root=root, answer_head=answer_head)
    with _serving(_handler(state)) as base:
        state.url = f"{base}/simple"
        yield state


@dataclass
class ProxyServer:
    url: str = ""
    relayed: list[str] = field(default_factory=list)  # absolute URLs, in order


def _proxy_handler(state: ProxyServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.relayed.append(self.path)  # a proxy is asked for the absolute URL
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "proxy-connection")
            }
            request = urllib.request.Request(self.path, headers=headers)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(request, timeout=30) as response:
                    status, reply_headers, body = response.status, response.headers, response.read()
            except urllib.error.HTTPError as error:
                status, reply_headers, body = error.code, error.headers, error.read()
            self.send_response(status)
            for key, value in reply_headers.items():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serve_proxy() -> Iterator[ProxyServer]:
    """A forward proxy for plain HTTP on a free port of 127.0.0.1 until the block ends."""
    state = ProxyServer()
    with _serving(_proxy_handler(state)) as base:
        state.url = base
        yield state
