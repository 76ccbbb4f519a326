"""A process pool over the machine's cores, with progress on stderr: what preparation fans out on."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from typing import TypeVar

import cv2

from augmenter.progress import StageProgress

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The cores this process may use (its CPU affinity, e.g. a SLURM allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _worker_init() -> None:
    """One thread per pool process: the pool is the parallelism, nested threads only contend."""
    cv2.setNumThreads(1)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork while this process runs a single thread (fast, no re-import, and scripts without a
    `__main__` guard work); spawn once other threads exist (a Dask client, a progress display), because
    forking a threaded process can copy a lock that some other thread holds."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _started_pool(workers: int) -> ProcessPoolExecutor:
    """A pool whose processes all exist already (so none is forked later, under a progress thread).

    OpenCV's thread pool does not survive a fork (a child's first cv2 call that touches it can hang), so it
    is stopped for the moment of forking: the children inherit OpenCV at one thread, this process gets its
    threads back afterwards.
    """
    context = _pool_context()
    forked = context.get_start_method() == "fork"
    threads = cv2.getNumThreads()
    if forked:
        cv2.setNumThreads(1)
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=None if forked else _worker_init
    )
    try:
        # Each process sleeps long enough that the next task needs a new one; ~0.1 s per pool.
        wait([executor.submit(time.sleep, 0.05) for _ in range(workers)])
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        if forked:
            cv2.setNumThreads(threads)
    return executor


def map_in_processes(
    function: Callable[[T], R],
    items: Sequence[T],
    workers: int | None = None,
    label: str = "working",
    unit: str = "items",
    progress: bool = True,
    completed: int = 0,
    total: int | None = None,
) -> list[R]:
    """[function(item) for item in items] in order, over a pool of `workers` processes (default: one per
    core), with progress on stderr (`completed` of `total` done before, e.g. found in a cache). The first
    failure cancels what has not started and is raised. With one worker or one item it runs here.
    `function` must be importable by name."""
    total = completed + len(items) if total is None else total
    workers = default_workers() if workers is None else max(1, int(workers))
    workers = min(workers, len(items))
    if workers <= 1:
        results = []
        with StageProgress(label, total, unit=unit, enabled=progress, completed=completed) as bar:
            for item in items:
                results.append(function(item))
                bar.advance()
        return results
    results_by_index: dict[int, R] = {}
    executor = _started_pool(workers)
    try:
        with StageProgress(label, total, unit=unit, enabled=progress, completed=completed) as bar:
            pending: dict[Future, int] = {executor.submit(function, item): i for i, item in enumerate(items)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    index = pending.pop(future)
                    results_by_index[index] = future.result()  # raises the worker's exception here
                    bar.advance()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [results_by_index[i] for i in range(len(items))]
