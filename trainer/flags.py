"""The flags of ``tagscale train`` (and the training flags ``tagscale compare`` shares), and
their mapping onto the network's size overrides."""

from __future__ import annotations

import argparse
import os
import sys

from model import features, network
from runtime.errors import TagscaleError

PAPER_FILTERS = 16  # the paper spectrogram front-end's n; filters of every front-end scale by n / 16
INITS = {"variance-scaling": "he_normal", "glorot": "glorot_uniform"}  # --init -> Keras initialiser
EPOCH_PATCHES = ("random", "grid", "all")
LR_SCHEDULES = ("cumulative", "plateau")  # trainer.schedule.SCHEDULES, without importing it before --help
# Old spellings that still work, with a one-line note on stderr: "seed" named the network preset,
# the learning-rate rule and --seed at once.
DEPRECATED = {"--preset": dict(network.PRESET_ALIASES), "--lr-schedule": {"seed": "cumulative"}}


def renamed(flag: str):
    """An argparse ``type`` for ``flag`` that maps an old spelling to its new name, with a note."""

    def convert(value: str) -> str:
        new = DEPRECATED[flag].get(value)
        if new is None:
            return value
        print(f"tagscale: {flag} {value} is deprecated; it is now called {flag} {new}", file=sys.stderr)
        return new

    return convert


# ----------------------------------------------------------------------------- flags


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The recipe and size flags shared by ``train`` and ``compare``."""
    recipe = parser.add_argument_group("training recipe (defaults: musicnn-training's config)")
    recipe.add_argument(
        "--preset",
        type=renamed("--preset"),
        choices=sorted(network.PRESETS),
        default=network.PAPER_PRESET,
        help=f"network sizes: {network.PAPER_PRESET}, the paper's models (Pons et al. 2018), or musicnn, the sizes of "
        f"musicnn's checkpoints ({network.PAPER_PRESET}; `seed` is its old name)",
    )
    recipe.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="epochs to run; the model kept is the one of the lowest validation loss (100)",
    )
    recipe.add_argument("--batch-size", type=int, default=32, help="global batch size (32)")
    recipe.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    recipe.add_argument(
        "--weight-decay",
        type=float,
        default=1e-5,
        help="L2 weight decay on conv and dense kernels, as musicnn-training's loss term (1e-5; 0: none)",
    )
    recipe.add_argument(
        "--lr-schedule",
        type=renamed("--lr-schedule"),
        choices=LR_SCHEDULES,
        default="cumulative",
        help="cumulative: musicnn-training's rule, the learning rate drops after the validation that follows "
        "--lr-plateau-patience validations that have not beaten the best loss, counted over the whole run (an "
        "improvement does not reset the count); plateau: Keras' ReduceLROnPlateau, after that many consecutive "
        "epochs without a loss lower by 1e-4 (cumulative; `seed` is its old name)",
    )
    recipe.add_argument(
        "--lr-plateau-patience",
        type=int,
        default=75,
        help="the --lr-schedule's patience in validated epochs (75)",
    )
    recipe.add_argument(
        "--lr-plateau-factor",
        type=float,
        default=0.5,
        help="factor the learning rate is multiplied by when the --lr-schedule says so (0.5)",
    )
    recipe.add_argument(
        "--epoch-patches",
        choices=EPOCH_PATCHES,
        default="random",
        help="random: one 187-frame crop per training track per epoch at a random frame offset (musicnn-training's); "
        "grid: one of the track's fixed, non-overlapping patches per epoch; all: every patch every epoch "
        "(random). Evaluation always uses all patches",
    )
    recipe.add_argument(
        "--init",
        choices=tuple(INITS),
        default="variance-scaling",
        help="kernel initialisation: variance-scaling (He, musicnn-training's) or glorot (variance-scaling)",
    )
    recipe.add_argument(
        "--early-stopping-patience",
        type=int,
        default=None,
        help="stop after this many epochs without a lower validation loss (default: off, run --epochs)",
    )
    recipe.add_argument(
        "--validation-freq",
        type=int,
        default=1,
        help="validate every N epochs (1); the best model is chosen among validated epochs",
    )
    recipe.add_argument(
        "--no-standardise",
        dest="standardise",
        action="store_false",
        help="spectrogram front-end: train on the raw log-mel, as musicnn-training does, not on the log-mel "
        "standardised per mel band with the training split's statistics (what featurize stores; the trainer undoes it, "
        "and the export then feeds the raw log-mel too)",
    )
    recipe.add_argument(
        "--standardise",
        dest="standardise",
        action="store_true",
        help="spectrogram front-end: train on the log-mel standardised per mel band (the default of `train`; "
        "`compare` trains both front-ends on their signal as computed unless given this)",
    )
    recipe.add_argument("--seed", type=int, default=0, help="random seed of weights init, dropout and shuffling (0)")
    recipe.add_argument("--shuffle-buffer", type=int, default=512, help="examples in the shuffle buffer (512)")
    sizes = parser.add_argument_group("size overrides (default: the preset's; small values for CPU demos)")
    sizes.add_argument(
        "--frontend-filters",
        type=int,
        default=None,
        help="front-end width n: every front-end conv gets its preset filters x n/16 "
        f"({network.PAPER_PRESET}: spectrogram timbral n..4n, temporal n..8n; waveform 4n..16n)",
    )
    sizes.add_argument(
        "--backend-channels",
        type=int,
        default=None,
        help=f"back-end conv channels ({network.PAPER_PRESET} 512, musicnn 64)",
    )
    sizes.add_argument(
        "--dense-units",
        type=int,
        default=None,
        help=f"penultimate dense units ({network.PAPER_PRESET} 500, musicnn 200)",
    )
    sizes.add_argument("--dropout", type=float, default=None, help="dropout rate (0.5)")
    recipe.add_argument(
        "--batch-norm-momentum",
        type=float,
        default=None,
        help="momentum of every batch norm's moving statistics (Keras' 0.99); short CPU runs need ~0.9, "
        "or inference-mode statistics lag behind the weights",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tagscale train",
        description="Train the waveform or spectrogram tagging model on featurized shards; evaluate per track "
        "on the test split (JOB/eval.json) and export a serving model (JOB/export/). Resumes after a kill.",
    )
    parser.add_argument("--features", required=True, help="featurize output directory (local or gs://)")
    parser.add_argument("--frontend", required=True, choices=features.FRONTENDS)
    parser.add_argument(
        "--job-dir",
        default=os.environ.get("AIP_MODEL_DIR"),
        help="output and checkpoint directory (local or gs://); default $AIP_MODEL_DIR (Vertex AI)",
    )
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="train on this fraction of the training tracks (1.0)"
    )
    parser.add_argument(
        "--subset",
        type=int,
        default=0,
        help="which hashed subset of the training tracks --fraction takes: 0 hashes the track ids, any other "
        "number hashes them with it and draws another subset of the same size (0)",
    )
    add_training_flags(parser)
    parser.add_argument("--no-export", dest="export", action="store_false", help="skip the serving-model export")
    parser.add_argument(
        "--verbose",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="Keras fit verbosity (0: only tagscale's line per epoch)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.job_dir:
        parser.error("--job-dir is required (or set AIP_MODEL_DIR)")
    check_recipe(parser, args)
    from trainer.inputs import check_fraction  # the one fraction check (imports TensorFlow: not before --help)

    check_fraction(args.fraction)
    return args


def check_recipe(parser: argparse.ArgumentParser, args) -> None:
    """Reject recipe flags out of range with argparse's usage error (exit 2)."""
    for name in ("epochs", "batch_size", "shuffle_buffer", "lr_plateau_patience", "validation_freq"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.early_stopping_patience is not None and args.early_stopping_patience < 1:
        parser.error(f"--early-stopping-patience must be at least 1, got {args.early_stopping_patience}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    if args.weight_decay < 0:
        parser.error(f"--weight-decay must be 0 or more, got {args.weight_decay}")
    if not 0 < args.lr_plateau_factor < 1:
        parser.error(f"--lr-plateau-factor must be in (0, 1), got {args.lr_plateau_factor}")


def network_overrides(args, frontend: str) -> dict:
    """Map the size flags onto :func:`model.network.build_model` overrides (NetworkConfig fields)."""
    overrides = {}
    preset = network.make_config(1, args.preset)
    if args.frontend_filters is not None:
        if args.frontend_filters < 1:
            raise TagscaleError(f"--frontend-filters must be at least 1, got {args.frontend_filters}")
        scale = args.frontend_filters / PAPER_FILTERS

        def scaled(filters: int) -> int:
            return max(1, int(round(filters * scale)))

        if frontend == "waveform":
            overrides["sample_filters"] = tuple(scaled(f) for f in preset.sample_filters)
        else:
            overrides["timbral"] = tuple((w, frac, scaled(f)) for w, frac, f in preset.timbral)
            overrides["temporal"] = tuple((length, scaled(f)) for length, f in preset.temporal)
    for flag, field in (
        ("backend_channels", "backend_filters"),
        ("dense_units", "dense_units"),
        ("dropout", "dropout"),
        ("batch_norm_momentum", "batch_norm_momentum"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    for field in ("backend_filters", "dense_units"):
        if field in overrides and overrides[field] < 1:
            raise TagscaleError(f"--{field.replace('_filters', '_channels').replace('_', '-')} must be at least 1")
    if "dropout" in overrides and not 0 <= overrides["dropout"] < 1:
        raise TagscaleError(f"--dropout must be in [0, 1), got {overrides['dropout']}")
    if "batch_norm_momentum" in overrides and not 0 <= overrides["batch_norm_momentum"] < 1:
        raise TagscaleError(f"--batch-norm-momentum must be in [0, 1), got {overrides['batch_norm_momentum']}")
    return overrides


# ------------------------------------------------------------------------- training
