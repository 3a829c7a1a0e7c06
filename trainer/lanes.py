"""Runs of the comparison trained at once: one lane per job, each a process with its share of
the cores, this process being one of them (see :func:`run_all`)."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable

from runtime.machine import set_tf_threads, share_of_cores, usable_cores


def default_jobs(n_runs: int) -> int:
    """1 on a GPU (the runs would share it); else one run per core, at most 4 and ``n_runs``."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return 1
    return max(1, min(n_runs, usable_cores(), 4))


def threads_per_job(jobs: int) -> int:
    """TensorFlow threads for each of ``jobs`` runs at once: an equal share of the cores."""
    return share_of_cores(jobs)


def _worker_init(threads: int) -> None:
    """Each worker process: ``threads`` TensorFlow threads, so that the workers share the cores."""
    logging.basicConfig(level=logging.INFO)
    set_tf_threads(threads)


@contextlib.contextmanager
def _run_logging():
    """This module's and the trainer's INFO lines on stderr while this process trains a run, as a
    worker's would be, without changing the logging of the rest of the process."""
    logger = logging.getLogger("tagscale")
    if logger.isEnabledFor(logging.INFO) and logging.getLogger().handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    level, logger.level = logger.level, logging.INFO
    propagate, logger.propagate = logger.propagate, False  # a handler of the root logger would print it again
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def next_run(pending: list[int], groups: list, last) -> int | None:
    """Removes and returns the first index of ``pending`` whose group is ``last``, else the first."""
    if not pending:
        return None
    index = next((i for i in pending if groups[i] == last), pending[0])
    pending.remove(index)
    return index


def run_all(
    runs: list, jobs: int, train: Callable[[Any], dict], group: Callable[[Any], Any] = lambda run: None
) -> list[dict]:
    """``train(run)`` of every run, in the order of ``runs``; ``jobs`` > 1 trains that many at once.

    A tiny model does not keep two cores busy (most of a step is one thread dispatching ops),
    so on a CPU two runs at once, each with half the threads, finish sooner than one after
    the other. The largest runs start first, each as soon as a lane is free, so the last ones
    to finish are short. A lane takes the largest waiting run of the ``group`` of its last run
    when there is one (then a run can reuse the model its lane has compiled, see
    :mod:`trainer.build`), else the largest waiting run. Each lane is one process; this process,
    which has TensorFlow loaded already, is one of them: it starts training while the worker
    processes are still starting theirs.
    """
    if jobs <= 1:
        return [train(run) for run in runs]
    import concurrent.futures
    import multiprocessing

    threads = threads_per_job(jobs)
    here = set_tf_threads(threads)
    pending = sorted(range(len(runs)), key=lambda i: -runs[i].fraction)
    groups = [group(run) for run in runs]
    lock = threading.Lock()
    rows: dict[int, dict] = {}

    def take(last) -> int | None:
        with lock:
            return next_run(pending, groups, last)

    def lane(fn) -> None:
        last = object()  # no run's group
        try:
            while (i := take(last)) is not None:
                rows[i] = fn(runs[i])
                last = groups[i]
        except BaseException:
            pending.clear()  # the other lanes finish their run and stop
            raise

    context = multiprocessing.get_context("spawn")  # a fresh TensorFlow per worker, not a fork of this one
    workers = jobs - 1 if here else jobs
    with contextlib.ExitStack() as stack:
        # One process per lane, so that a lane's runs share its process's compiled models.
        pools = [
            stack.enter_context(
                concurrent.futures.ProcessPoolExecutor(
                    1, mp_context=context, initializer=_worker_init, initargs=(threads,)
                )
            )
            for _ in range(workers)
        ]
        feeders = stack.enter_context(concurrent.futures.ThreadPoolExecutor(workers))
        lanes = [feeders.submit(lane, lambda run, pool=pool: pool.submit(train, run).result()) for pool in pools]
        if here:
            with _run_logging():
                lane(train)
        for future in lanes:
            future.result()
    return [rows[i] for i in range(len(runs))]
