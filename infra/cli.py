"""The ``tagscale`` command: one entry point, one module per subcommand.

Each subcommand lives in the module that does the work and exposes ``main(argv) -> int``;
modules are imported only when their subcommand runs, so ``tagscale --help`` stays fast.
Errors the user can fix (:class:`runtime.errors.TagscaleError`) print as one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help); "module:function" where the entry is not the module's main.
# The order is the order of a typical run.
COMMANDS = {
    "demo-catalog": ("infra.demo.catalog", "synthesize a demo catalog of tagged tracks (wav/mp3/flac/ogg)"),
    "catalog": (
        "pipelines.catalog_datasets",
        "write a Parquet catalog of MagnaTagATune or MTG-Jamendo with its official split",
    ),
    "featurize": ("pipelines.featurize", "Beam: catalog -> waveform and log-mel TFRecord shards + tf.Transform stats"),
    "pretrained": ("infra.pretrained", "list or fetch the pretrained musicnn models (MTT, MSD)"),
    "train": ("trainer.task", "train the waveform or spectrogram model on featurized shards"),
    "compare": (
        "infra.cloud.compare",
        "the front-end comparison: both front-ends x training-set fractions (here, or --backend vertex; --collect)",
    ),
    "tag": ("pipelines.tag", "Beam: tag a catalog with a model, write Parquet"),
    "query": ("tagruns.query", "DuckDB queries over tag Parquet output"),
    "explore": (
        "infra.explore.server",
        "a local web app over tag runs: browse by tag, play tracks, tags in time, summary; --labels: curate",
    ),
    "similar": ("tagruns.similar", "tracks most similar to a track (or an audio file) by embedding cosine"),
    "index": ("tagruns.similar:index_main", "build an approximate nearest-neighbour index (faiss IVF) for similar"),
    "probe": ("tagruns.probe", "train / apply linear probes: new tags from a few labels"),
    "calibrate": ("tagruns.calibrate", "a threshold per tag at a target precision, from labels"),
    "evaluate": ("tagruns.evaluate", "macro and per-tag ROC-AUC / PR-AUC of a tag run against labels"),
    "diff": ("tagruns.diff", "what changed between two tag runs: report.md + PNG"),
    "submit-training": ("infra.cloud.vertex", "submit a trainer job to Vertex AI (or --dry-run the spec)"),
    "demo": ("infra.demo.chain", "the whole chain on a synthesized catalog (what `make demo` runs)"),
}


# The Beam jobs: their processes start without scikit-learn and matplotlib (see
# pipelines.beam_util.skip_unused_imports), about 2 CPU s less per run.
BEAM_JOBS = ("featurize", "tag")
# Commands with a --verbose of their own (Keras' verbosity, a number): after them, --verbose is theirs.
OWN_VERBOSE = ("train", "compare")


def take_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without tagscale's ``--verbose``, and whether it was there: before the command,
    or anywhere after it up to a ``--`` (what follows ``--`` is another program's), except after
    a command in :data:`OWN_VERBOSE`."""
    rest, verbose, command = [], False, None
    for i, token in enumerate(argv):
        if token == "--":
            return rest + argv[i:], verbose
        if token == "--verbose" and command not in OWN_VERBOSE:
            verbose = True
            continue
        if command is None and not token.startswith("-"):
            command = token
        rest.append(token)
    return rest, verbose


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale",
        description="Music audio tagging at catalog scale. Run `tagscale COMMAND --help` for a command's flags.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every log line of TensorFlow, Beam and the decoders (also: TAGSCALE_LOG=debug); "
        "also after the command, except after train and compare, whose --verbose is Keras'",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``tagscale ARGV``. Called with no ``argv`` (the console command) it owns the process,
    and keeps library log lines off the terminal unless ``--verbose``; a caller passing ``argv``
    keeps its stderr as it is."""
    whole_process = argv is None
    if whole_process:
        from runtime.machine import collect_for_a_command

        collect_for_a_command()
    argv, verbose = take_verbose(list(sys.argv[1:] if argv is None else argv))
    if verbose:
        os.environ["TAGSCALE_LOG"] = "debug"  # children (decode helpers, Beam workers) too
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv)  # prints help or the usage error and exits
    module_name, _, function = COMMANDS[argv[0]][0].partition(":")
    if argv[0] in BEAM_JOBS:
        from pipelines import beam_util

        beam_util.skip_unused_imports()
    from runtime.errors import run_command

    return run_command(
        argv[0],
        lambda args: getattr(importlib.import_module(module_name), function or "main")(args),
        argv[1:],
        quiet=whole_process,
    )


if __name__ == "__main__":
    sys.exit(main())
