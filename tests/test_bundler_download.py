"""Downloads over real HTTP (a local index on 127.0.0.1): resume after a drop, bytes moved once."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

import bundler
from bundler.errors import DownloadError, ResolutionError
from tests.support.http_index import add_core_metadata, serve_index
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
