"""Pipeline construction shared by the featurize and tag pipelines."""

from __future__ import annotations

import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions, TestOptions

LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner")

# Keras 3, which TensorFlow imports as it starts, imports scikit-learn (for its estimator
# wrappers) and matplotlib (for its image plots) whenever they are installed: about 2 CPU s per
# process, a seventh of featurize's fixed cost. Keras treats both as optional, and a process that
# only runs a Beam job uses neither.
UNUSED_BY_BEAM_JOBS = ("sklearn", "matplotlib")


def skip_unused_imports() -> None:
    """Mark scikit-learn and matplotlib absent in this process, so TensorFlow starts without them.

    Only for a process that runs nothing but a featurize or tag job (``tagscale featurize`` /
    ``tagscale tag``): call it at the entry point, before TensorFlow is imported, never from
    library code, since any later ``import sklearn`` in this process raises ImportError.
    """
    for name in UNUSED_BY_BEAM_JOBS:
        sys.modules.setdefault(name, None)


def make_pipeline(beam_args: list[str]) -> beam.Pipeline:
    """A ``beam.Pipeline`` from standard Beam flags, DirectRunner semantics by default.

    Beam 2.77's DirectRunner first tries to download the Prism runner from the internet and
    falls back to the FnApiRunner; locally we go straight to the FnApiRunner (which honours
    ``--direct_running_mode`` and ``--direct_num_workers``). Any other ``--runner`` (Dataflow)
    is passed through untouched.
    """
    options = PipelineOptions(beam_args)
    options.view_as(SetupOptions).save_main_session = False
    runner = options.view_as(StandardOptions).runner
    if runner in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def worker_path(path: str) -> str:
    """``path`` as a Beam job hands it to its workers: a local path made absolute against this
    process's working directory, a URL (``gs://``, ``file://``) as it is. The workers of a
    portable or remote runner run in directories of their own, where a relative path names
    another file, or none."""
    return path if not path or "://" in path else os.path.abspath(path)


def is_local(beam_args: list[str]) -> bool:
    return PipelineOptions(beam_args).view_as(StandardOptions).runner in LOCAL_RUNNERS


def decode_threads(beam_args: list[str]) -> int:
    """Tracks each local worker decodes at once: the usable cores shared among the runner's workers
    (``--direct_num_workers``), so that decoding, which waits on helper processes, keeps every core
    busy. 1 on any other runner, whose workers already run one SDK process per core."""
    from apache_beam.options.pipeline_options import DirectOptions

    from runtime.machine import share_of_cores

    if not is_local(beam_args):
        return 1
    workers = PipelineOptions(beam_args).view_as(DirectOptions).direct_num_workers or 1
    return share_of_cores(workers)


def is_dry_run(beam_args: list[str]) -> bool:
    """DataflowRunner's ``--dry_run=True``: the job is built and translated but not submitted."""
    return bool(PipelineOptions(beam_args).view_as(TestOptions).dry_run)
