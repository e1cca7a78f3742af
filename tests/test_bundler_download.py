"""Downloads over real HTTP (a local index on 127.0.0.1), through pip's own transport: resume
after a drop, a complete ``.part`` kept, 416 handled, credentials and a proxy honoured, progress
shown, bytes moved once."""

from __future__ import annotations

import hashlib
import io
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bundler
from bundler.errors import DownloadError, ResolutionError
from bundler.wheelhouse.transport import Progress
from tests.support.http_index import add_core_metadata, serve_index, serve_proxy
from tests.support.packages import make_index, make_wheel

BIG = "ko_big-1.0-py3-none-any.whl"
SMALL = "ko_small-1.0-py3-none-any.whl"


def _index(root: Path, *, core_metadata: bool) -> Path:
    dists = root / "dists"
    noise = random.Random(7).randbytes(150_000).hex()  # incompressible: a wheel of ~150 kB
    make_wheel(dists, "ko-big", "1.0", requires=["ko-small"], module_source=f"DATA = {noise!r}\n")
    make_wheel(dists, "ko-small", "1.0")
    make_index(root / "index", sorted(dists.iterdir()))
    if core_metadata:
        add_core_metadata(root / "index")
    return root / "index"


def _build(url: str, root: Path, **kwargs) -> bundler.BuildResult:
    return bundler.build(
        ["ko-big"], root / "house", index_url=url, cache_dir=root / "cache",
        include_self=False, dataset_id="tester/ko-wheels", **kwargs,
    )  # fmt: skip


def test_interrupted_download_leaves_nothing_in_the_house_and_resumes(tmp_path: Path) -> None:
    index = _index(tmp_path, core_metadata=True)
    size = (index / "simple" / "ko-big" / BIG).stat().st_size
    with serve_index(index) as server:
        server.cut_after[BIG] = 40_000
        with pytest.raises(DownloadError) as caught:
            _build(server.url, tmp_path)
        message = str(caught.value)
        assert "\n" not in message
        assert BIG in message and "127.0.0.1" in message and "re-run" in message
        house = tmp_path / "house"
        assert not (house / "manifest.json").exists()
        assert not (house / "wheels").exists() or not any((house / "wheels").iterdir())
        digest = hashlib.sha256((index / "simple" / "ko-big" / BIG).read_bytes()).hexdigest()
        part = tmp_path / "cache" / "blobs" / "partial" / f"{digest}.part"
        assert part.stat().st_size == 40_000

        result = _build(server.url, tmp_path)

    big_requests = [header for path, header in server.requests if path.endswith("/" + BIG)]
    assert big_requests == [None, "bytes=40000-"], "pip read metadata only; we resumed"
    assert result.downloaded == (BIG,), "ko-small completed in the first run, beside the drop"
    assert result.downloaded_bytes == size - 40_000
    assert result.reused == (SMALL,)
    assert not part.exists()
    assert bundler.verify(result.output_dir) == []


def test_wheels_pip_downloads_while_resolving_are_not_fetched_again(tmp_path: Path) -> None:
    # Without PEP 658 metadata pip must download whole wheels to resolve: the shim keeps them.
    index = _index(tmp_path, core_metadata=False)
    with serve_index(index) as server:
        cold = _build(server.url, tmp_path)
        assert server.count(BIG) == 1 and server.count(SMALL) == 1
        assert sorted(cold.downloaded) == [BIG, SMALL]
        assert cold.downloaded_bytes == sum(e.size for e in cold.manifest.wheels)

        again = _build(server.url, tmp_path, refresh=True)  # pip runs, served from the store
        assert again.resolved
        assert server.count(BIG) == 1 and server.count(SMALL) == 1
        assert again.downloaded == () and again.downloaded_bytes == 0
    assert bundler.verify(again.output_dir) == []


def test_unreachable_index_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_RETRIES", "0")  # pip's transport settings pass through
    index = _index(tmp_path, core_metadata=True)
    with serve_index(index) as server:
        url = server.url
    with pytest.raises(ResolutionError) as caught:  # the server is gone now
        _build(url, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "ko-big" in message
    assert "could not be reached" in message and "Connection refused" in message


def _part_of(index: Path, tmp_path: Path) -> tuple[Path, bytes]:
    data = (index / "simple" / "ko-big" / BIG).read_bytes()
    part = tmp_path / "cache" / "blobs" / "partial" / f"{hashlib.sha256(data).hexdigest()}.part"
    part.parent.mkdir(parents=True)
    return part, data


def test_a_complete_part_file_is_verified_and_kept_without_a_request(tmp_path: Path) -> None:
    # A run killed after the last byte, before the rename into the store.
    index = _index(tmp_path, core_metadata=True)
    part, data = _part_of(index, tmp_path)
    part.write_bytes(data)
    with serve_index(index) as server:
        result = _build(server.url, tmp_path)
    assert server.count(BIG) == 0
    assert result.downloaded == (SMALL,) and result.reused == (BIG,)
    assert not part.exists()
    assert bundler.verify(result.output_dir) == []


@pytest.mark.parametrize("extra", [0, 100], ids=["same-size-corrupt", "longer-than-the-file"])
def test_a_part_that_is_no_prefix_gets_416_and_the_file_is_fetched_whole(
    tmp_path: Path, extra: int
) -> None:
    index = _index(tmp_path, core_metadata=True)
    part, data = _part_of(index, tmp_path)
    part.write_bytes(bytes(len(data) + extra))  # zeros: not this file's bytes
    with serve_index(index) as server:
        result = _build(server.url, tmp_path)
    big_requests = [header for path, header in server.requests if path.endswith("/" + BIG)]
    assert big_requests == [f"bytes={len(data) + extra}-", None]
    assert result.manifest.wheel("ko-big").sha256 == hashlib.sha256(data).hexdigest()
    assert bundler.verify(result.output_dir) == []


def test_index_credentials_and_a_configured_proxy_are_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip strips user:password from the URLs in its report; the download must still send them,
    # and must go through the proxy that pip's configuration names.
    index = _index(tmp_path, core_metadata=True)
    with serve_index(index) as server, serve_proxy() as proxy:
        server.credentials = ("ko-user", "s3cret")
        config = tmp_path / "pip.conf"
        config.write_text(f"[global]\nproxy = {proxy.url}\n")
        monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
        url = server.url.replace("http://", "http://ko-user:s3cret@")
        result = _build(url, tmp_path)
    assert sorted(result.downloaded) == [BIG, SMALL]
    fetched = [u for u in proxy.relayed if u.endswith((BIG, SMALL))]
    assert len(fetched) == 2, proxy.relayed
    assert all("s3cret" not in u for u in proxy.relayed)  # sent as a header, not in the URL
    assert server.refused == 0
    assert bundler.verify(result.output_dir) == []


def test_missing_credentials_are_a_one_line_error_naming_them(tmp_path: Path) -> None:
    index = _index(tmp_path, core_metadata=True)
    with serve_index(index) as server:
        server.credentials = ("ko-user", "s3cret")
        with pytest.raises(ResolutionError) as caught:
            _build(server.url, tmp_path)
    assert "\n" not in str(caught.value)


def test_progress_is_shown_as_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    index = _index(tmp_path, core_metadata=True)
    with serve_index(index) as server:
        completed = subprocess.run(
            [sys.executable, "-m", "bundler", "build", "ko-big", "-o", str(tmp_path / "house"),
             "--index-url", server.url, "--no-self", "--cache-dir", str(tmp_path / "cache"),
             "--dataset-id", "tester/ko-wheels"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert re.search(rf"^  downloading {re.escape(BIG)} \(0\.\d MB\)$", completed.stderr, re.M)
    assert f"  downloaded {BIG}" in completed.stderr
    assert "progress: 2/2 files" in completed.stderr
    assert "\r" not in completed.stderr


def test_the_progress_bar_redraws_one_line_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress("bar", stream, files=1)
    progress.start("big.whl", 2_000_000, 0)
    progress.advance(1_000_000)
    progress.finish("big.whl")
    progress.close()
    text = stream.getvalue()
    assert (
        "\r  downloading [###############---------------]  50% 0/1 files, 1.0 MB of 2.0 MB" in text
    )
    assert text.rstrip("\n").endswith("100% 1/1 files, 1.0 MB of 2.0 MB") is False
    assert "\n" not in text.rstrip("\n")
