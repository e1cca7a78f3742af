"""Blocks as Dask futures: an embedded LocalCluster, or the user's scheduler.

No scheduling of our own beyond submitting blocks in z order with a bounded number in flight and
collecting results: Dask places them, retries a block once when it fails or its worker is lost,
and a GPU worker declares a ``GPU`` resource so one block runs per GPU at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

from runtime.contract.errors import InferenceError, first_line
from runtime.scroll.blocks import BlockJob, run_block
from runtime.scroll.grid import Block

__all__ = ["dask_client", "run_blocks"]

RETRIES = 1  # a block is tried twice in all before it is recorded as failed


@contextlib.contextmanager
def dask_client(
    workers: int | None, scheduler: str | None, gpus: int, log: Callable[[str], None]
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(client, description); an embedded cluster is closed on exit, a user's is left alone."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InferenceError(
            "zarr input runs on Dask: pip install 'kaggle-offline[scroll]' (dask[distributed])"
        ) from None
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        with Client(address, timeout="30s") as client:
            found = len(client.scheduler_info().get("workers", {}))
            log(f"dask: scheduler {address}, {found} worker(s)")
            yield client, {"scheduler": address, "workers": found, "embedded": False}
        return
    count = workers or max(gpus, 1)
    resources = {"GPU": 1} if gpus else None
    with (
        LocalCluster(
            n_workers=count,
            threads_per_worker=1,  # one block at a time per worker process
            processes=True,
            resources=resources,
            dashboard_address=None,
            # Blocks hold their memory as numpy buffers Dask cannot spill: no pausing on them.
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        log(f"dask: embedded LocalCluster, {count} single-threaded worker process(es)")
        yield client, {"scheduler": "embedded", "workers": count, "embedded": True, "gpus": gpus}


def run_blocks(
    client: Any,
    job: BlockJob,
    blocks: list[Block],
    *,
    in_flight: int,
    gpu: bool,
    on_done: Callable[[dict[str, Any]], None],
) -> list[tuple[Block, str]]:
    """Run ``blocks`` (z order), at most ``in_flight`` at once; the failures, each named."""
    from distributed import as_completed

    pending = iter(blocks)
    resources = {"GPU": 1} if gpu else None
    by_key: dict[str, Block] = {}

    def submit(block: Block) -> Any:
        future = client.submit(
            run_block,
            job,
            block,
            key=f"block-{block.name}-{job.fingerprint[:12]}",
            retries=RETRIES,
            resources=resources,
            pure=False,
        )
        by_key[future.key] = block
        return future

    first = [submit(block) for block in itertools.islice(pending, in_flight)]
    failures: list[tuple[Block, str]] = []
    completed = as_completed(first)
    for future in completed:
        block = by_key.pop(future.key)
        if future.status == "finished":
            on_done(future.result())
        else:
            error = future.exception()
            failures.append((block, first_line(error)))
        future.release()
        following = next(pending, None)
        if following is not None:
            completed.add(submit(following))
    return failures
