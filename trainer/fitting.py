"""Fitting one run: its network and inputs built, then Keras ``fit`` with resume in one process,
or the loop of :mod:`trainer.multiworker` across workers (:func:`fit_run`).

:func:`fit_callbacks` is the one list of callbacks a single-process fit uses, in order; a
profiler or a test that wants to observe a fit wraps that function.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from posixpath import join  # local paths and gs:// URIs alike, without Beam

from model import network

LOG = logging.getLogger("tagscale.train")


def export_copy(model, frontend: str, n_tags: int, preset: str, overrides: dict, *, rebuild: bool = False):
    """``model`` itself in float32; rebuilt in float32 with its weights when trained in mixed precision
    or when ``rebuild`` (a model of distributed variables, which the chief evaluates and exports alone)."""
    import keras

    if keras.mixed_precision.global_policy().name == "float32" and not rebuild:
        return model
    keras.mixed_precision.set_global_policy("float32")
    copy = network.build_model(frontend, n_tags, preset, **overrides)
    copy.set_weights(model.get_weights())
    return copy


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """What one process's Keras ``fit`` needs besides the model and the data."""

    job_dir: str
    label: str  # the progress lines' tag
    epoch_examples: int  # training examples per epoch (the progress lines' rate)
    epochs: int
    validation_freq: int
    verbose: int
    early_stopping_patience: int | None
    lr_rule: object  # trainer.schedule.Rule

    @classmethod
    def from_args(cls, args, *, job_dir: str, label: str, epoch_examples: int) -> FitPlan:
        from trainer import schedule

        return cls(
            job_dir=job_dir,
            label=label,
            epoch_examples=epoch_examples,
            epochs=args.epochs,
            validation_freq=args.validation_freq,
            verbose=args.verbose,
            early_stopping_patience=args.early_stopping_patience,
            lr_rule=schedule.Rule.from_args(args),
        )


def fit_callbacks(plan: FitPlan, input_callbacks: list) -> list:
    """The callbacks of :func:`fit_single`, in order; the first :class:`trainer.callbacks.ResumableEarlyStopping`
    among them holds the best epoch."""
    import keras

    from trainer import callbacks

    return [
        *input_callbacks,
        callbacks.StopOnNonFiniteLoss(),  # first: a poisoned epoch is neither logged, kept nor backed up
        callbacks.ResumableEarlyStopping(  # before the history: it logs the learning rate the next epoch uses
            join(plan.job_dir, "checkpoints"),
            monitor="val_loss",
            patience=plan.early_stopping_patience,
            lr_rule=plan.lr_rule,
        ),
        callbacks.HistoryLog(join(plan.job_dir, "history.json")),
        keras.callbacks.TensorBoard(join(plan.job_dir, "tensorboard"), write_graph=False),  # per-epoch scalars
        keras.callbacks.BackupAndRestore(join(plan.job_dir, "backup"), save_freq="epoch", double_checkpoint=True),
        callbacks.EpochProgress(
            plan.label, plan.epoch_examples, plan.epochs, print_fn=lambda line: print(line, flush=True)
        ),
    ]


def fit_single(train_model, train_data, valid_data, *, plan: FitPlan, input_callbacks: list) -> tuple[int, float]:
    """Keras ``fit`` with resume (one process, one or several GPUs); ``(best epoch, fit wall seconds)``."""
    from trainer import callbacks

    fit_with = fit_callbacks(plan, input_callbacks)
    best = next(c for c in fit_with if isinstance(c, callbacks.ResumableEarlyStopping))
    start = time.perf_counter()
    train_model.fit(
        train_data,
        validation_data=valid_data,
        validation_freq=plan.validation_freq,
        epochs=plan.epochs,
        callbacks=fit_with,
        verbose=plan.verbose,
        shuffle=False,
    )
    return best.best_epoch, time.perf_counter() - start


@dataclasses.dataclass
class Fitted:
    """A finished fit: the float32 model of the best epoch, or ``model`` None on a worker that is not the chief."""

    model: object
    best_epoch: int
    fit_wall_s: float


def fit_run(
    args, strategy, mixed: bool, features, overrides: dict, train_counts: dict, phases, *, keep: bool
) -> Fitted:
    """Build the network and its inputs, then fit: Keras ``fit`` in one process, the loop of
    :mod:`trainer.multiworker` across workers."""
    import keras

    from trainer import build, inputs, multiworker
    from trainer import recipe as recipe_lib

    frontend, job_dir = args.frontend, args.job_dir.rstrip("/")
    multi = multiworker.worker_count() > 1
    keras.utils.set_random_seed(args.seed)
    train_data, epoch_examples, input_callbacks = recipe_lib.training_data(args, features, frontend, train_counts)
    valid_data = inputs.make_dataset(
        features, "valid", frontend, batch_size=args.batch_size, n_examples=features.split_examples("valid")
    )
    with strategy.scope():
        model, train_model = build.build_for_run(
            args,
            frontend,
            features.n_tags,
            overrides,
            compile=not multi,
            keep=keep and strategy.num_replicas_in_sync == 1,
        )
    label = getattr(args, "label", None) or f"{frontend} f{args.fraction:g}"
    LOG.info(
        "training %s (%s, %d params) on %d examples of %d tracks",
        frontend,
        args.preset,
        model.count_params(),
        train_counts["examples"],
        train_counts["tracks"],
    )
    phases.end("setup")
    if not multi:
        plan = FitPlan.from_args(args, job_dir=job_dir, label=label, epoch_examples=epoch_examples)
        best_epoch, fit_wall = fit_single(
            train_model, train_data, valid_data, plan=plan, input_callbacks=input_callbacks
        )
        phases.end("fit")
        return Fitted(export_copy(model, frontend, features.n_tags, args.preset, overrides), best_epoch, fit_wall)
    outcome = multiworker.fit(
        strategy,
        model,
        args,
        train_data,
        valid_data,
        job_dir=job_dir,
        label=label,
        n_tags=features.n_tags,
        epoch_examples=epoch_examples,
        epoch_counter=next((c for c in input_callbacks if isinstance(c, recipe_lib.EpochCounter)), None),
        mixed=mixed,
    )
    phases.end("fit")
    if not outcome.chief:  # the chief alone evaluates and writes
        return Fitted(None, outcome.best_epoch, outcome.fit_wall_s)
    model = export_copy(model, frontend, features.n_tags, args.preset, overrides, rebuild=True)
    if outcome.best_weights:
        model.load_weights(outcome.best_weights)
    return Fitted(model, outcome.best_epoch, outcome.fit_wall_s)
