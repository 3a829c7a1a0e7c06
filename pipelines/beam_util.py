"""Pipeline construction shared by the featurize and tag pipelines."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions, TestOptions

LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner")


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


def is_local(beam_args: list[str]) -> bool:
    return PipelineOptions(beam_args).view_as(StandardOptions).runner in LOCAL_RUNNERS


def is_dry_run(beam_args: list[str]) -> bool:
    """DataflowRunner's ``--dry_run=True``: the job is built and translated but not submitted."""
    return bool(PipelineOptions(beam_args).view_as(TestOptions).dry_run)
