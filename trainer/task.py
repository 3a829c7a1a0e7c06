"""Train one front-end on featurized shards, evaluate it per track, export a serving model.

    tagscale train --features FEATURES --frontend spectrogram --job-dir JOB [options]
    python -m trainer.task --features FEATURES --frontend waveform --job-dir gs://bucket/job

The recipe defaults are the seed's (musicnn-training's config, see :mod:`trainer.recipe`): Adam
at 1e-3, batch 32, binary cross-entropy plus L2 weight decay 1e-5, the learning rate halved
each time 75 more validations have not beaten the best loss (the seed's rule,
:mod:`trainer.schedule`), one crop per track per epoch at a random frame offset
(:mod:`trainer.crops`), He initialisation, ``--epochs`` run and the model of the lowest
validation loss kept (early stopping only with ``--early-stopping-patience``). A NaN or
infinite loss stops training with :class:`trainer.schedule.NonFiniteLoss`. Everything lands in the job directory
(local or gs://)::

    JOB/backup/          BackupAndRestore: weights, optimizer, epoch (deleted when done)
    JOB/checkpoints/     best-model / early-stopping state and best weights (deleted when done)
    JOB/history.json     per-epoch logs, across restarts
    JOB/tensorboard/     TensorBoard logs
    JOB/model.keras      the trained Keras model (best validation loss)
    JOB/eval.json        track-level test ROC-AUC / PR-AUC, per tag, parameters, time
    JOB/export/          serving model: waveform patches -> scores, embedding (+ tags.txt)

Kill the process at any point and run the same command again: training resumes after the last
finished epoch. With several GPUs visible it trains under ``MirroredStrategy`` (``--batch-size``
is the global batch); on GPU in ``mixed_float16``. When ``TF_CONFIG`` names several workers (a
Vertex AI worker pool, ``tagscale submit-training --workers N``) it trains under
``MultiWorkerMirroredStrategy`` with the loop of :mod:`trainer.multiworker`; only the chief
writes the job directory (checkpoints in ``JOB/checkpoints/`` instead of ``JOB/backup/``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from posixpath import join  # local paths and gs:// URIs alike, without Beam

from runtime.errors import TagscaleError
from trainer import fitting
from trainer.flags import network_overrides, parse_args

LOG = logging.getLogger("tagscale.train")


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_and_evaluate` returns: the eval.json contents, history and the model."""

    evaluation: dict
    history: dict
    model: object  # keras.Model with dict outputs {"scores", "embedding"}
    job_dir: str
    export_dir: str | None


def run_settings(args, overrides: dict) -> dict:
    """The recipe of a run as eval.json records it (JSON values: tuples become lists)."""
    settings = {
        "preset": args.preset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "adam",
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "lr_schedule": args.lr_schedule,
        "lr_plateau_patience": args.lr_plateau_patience,
        "lr_plateau_factor": args.lr_plateau_factor,
        "epoch_patches": args.epoch_patches,
        "init": args.init,
        "standardise": args.standardise,
        "early_stopping_patience": args.early_stopping_patience,
        "validation_freq": args.validation_freq,
        "seed": args.seed,
        "fraction": args.fraction,
        "subset": getattr(args, "subset", 0),
        "shuffle_buffer": args.shuffle_buffer,
        "batch_norm_momentum": args.batch_norm_momentum,
        "overrides": overrides,
    }
    return json.loads(json.dumps(settings))


def device_setup():
    """``(strategy, mixed_precision)``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names several
    workers, else MirroredStrategy for several GPUs; mixed_float16 on GPU.

    Call it before any other TensorFlow work: a multi-worker strategy configures the runtime's
    collective ops, which it can do only before the runtime starts.
    """
    import keras
    import tensorflow as tf

    from trainer import multiworker

    gpus = tf.config.list_physical_devices("GPU")
    if multiworker.worker_count() > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    mixed = bool(gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return strategy, mixed


def predict_patches(model, dataset) -> dict:
    """Scores of every patch of a ``with_ids`` dataset: track_id, patch_index, labels, scores."""
    import numpy as np
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input.shape[1:]], tf.float32)
    scores_of = tf.function(
        lambda inputs: tf.cast(model(inputs, training=False)["scores"], tf.float32), input_signature=[spec]
    )

    parts = {"track_id": [], "patch_index": [], "labels": [], "scores": []}
    for batch in dataset:
        parts["scores"].append(scores_of(batch["inputs"]).numpy())
        for key in ("track_id", "patch_index", "labels"):
            parts[key].append(batch[key].numpy())
    return {key: np.concatenate(value) if value else np.zeros((0,)) for key, value in parts.items()}


def evaluate_tracks(model, features, frontend: str, *, batch_size: int, split: str = "test") -> dict:
    """Track-level macro / per-tag ROC-AUC and PR-AUC of ``model`` on ``split``."""
    from trainer import inputs, metrics

    dataset = inputs.make_dataset(features, split, frontend, batch_size=batch_size, with_ids=True)
    patches = predict_patches(model, dataset)
    ids, labels, scores = metrics.track_scores(patches["track_id"], patches["labels"], patches["scores"])
    report = metrics.tag_report(labels, scores, features.tags)
    report.update(tracks=len(ids), examples=int(len(patches["scores"])))
    return report


class Phases:
    """Wall seconds per named phase of a run (eval.json's ``phases_s``): each call of
    :meth:`end` closes the phase that began at the previous call."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._clock = time.perf_counter()

    def end(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._clock, 3)
        self._clock = now


def open_run_features(args):
    """``(features, raw_mel)``: the features directory checked for a run of ``args.frontend``,
    read back unstandardised under ``--no-standardise``; every split it needs non-empty."""
    from trainer import inputs

    frontend = args.frontend
    raw_mel = frontend == "spectrogram" and not args.standardise
    features = inputs.open_features(
        args.features, [frontend], need_transform=frontend == "spectrogram" and (args.export or raw_mel)
    )
    if raw_mel:  # every dataset below (train, valid, test) reads the log-mel unstandardised
        features = dataclasses.replace(features, band_stats=inputs.band_statistics(features))
    for split in ("valid", "test"):
        if features.split_examples(split) == 0:
            raise TagscaleError(
                f"{features.path}: the {split} split has no examples; "
                f"featurize more tracks or a larger --{split}-fraction"
            )
    return features, raw_mel


def evaluation_record(args, features, report: dict, history: dict, fitted, settings: dict, train_counts) -> dict:
    """eval.json's contents (without ``export`` and ``phases_s``)."""
    return {
        "frontend": args.frontend,
        "features": features.path,
        "tags": features.tags,
        "roc_auc": report.pop("roc_auc"),
        "pr_auc": report.pop("pr_auc"),
        "evaluated_tags": report.pop("evaluated_tags"),
        "excluded_tags": report.pop("excluded_tags"),
        "per_tag": report.pop("per_tag"),
        "test": {"tracks": report["tracks"], "examples": report["examples"]},
        "train": train_counts,
        "params": int(fitted.model.count_params()),
        "epochs_trained": len(history["epoch"]),
        "best_epoch": fitted.best_epoch,
        "stopped_early": len(history["epoch"]) < args.epochs,
        "train_time_s": round(float(sum(history.get("epoch_time_s", []))), 3),
        "fit_wall_s_this_process": round(fitted.fit_wall_s, 3),
        "settings": settings,
        "device": "GPU" if settings["mixed_precision"] else "CPU",
    }


def export_run(args, model, features, evaluation: dict, settings: dict, *, raw_mel: bool) -> tuple[str, dict]:
    """Write the serving model to ``JOB/export``; ``(its directory, what the export reports)``."""
    from trainer import exporting

    export_dir = join(args.job_dir.rstrip("/"), "export")
    info = {
        "name": f"{args.frontend}-{args.preset}",
        "preset": args.preset,
        "roc_auc": evaluation["roc_auc"],
        "pr_auc": evaluation["pr_auc"],
        "features_dir": features.path,  # where it came from: the features and the recipe
        "recipe": settings,
    }
    written = exporting.export_model(
        model,
        args.frontend,
        export_dir,
        features_dir=features.path,
        tags=features.tags,
        info=info,
        standardised=not raw_mel,
    )
    return export_dir, written


def train_and_evaluate(args, *, keep: bool = False) -> TrainResult:
    """Fit with resume, evaluate per track on the test split, export; see the module docstring.

    eval.json's ``phases_s`` has the wall time of each phase. ``keep``: keep the compiled model
    for the next run of this process, and reuse the last one kept when its network and recipe
    are the same (:func:`trainer.build.build_for_run`); the returned model then changes when a
    later run reuses it.
    """
    import tensorflow as tf

    from trainer import callbacks, inputs, multiworker

    phases = Phases()
    strategy, mixed = device_setup()  # first: see its docstring
    job_dir = args.job_dir.rstrip("/")
    features, raw_mel = open_run_features(args)
    subset = getattr(args, "subset", 0)
    train_counts = inputs.count_split(features, "train", fraction=args.fraction, subset=subset)
    if train_counts["examples"] == 0:
        raise TagscaleError(f"--fraction {args.fraction} keeps no training tracks of {features.path}")
    overrides = network_overrides(args, args.frontend)
    tf.io.gfile.makedirs(job_dir)

    fitted = fitting.fit_run(args, strategy, mixed, features, overrides, train_counts, phases, keep=keep)
    if fitted.model is None:
        return TrainResult(evaluation={}, history={}, model=None, job_dir=job_dir, export_dir=None)
    history = callbacks.read_history(join(job_dir, "history.json"))
    fitted.model.save(join(job_dir, "model.keras"))
    phases.end("save_model")
    report = evaluate_tracks(fitted.model, features, args.frontend, batch_size=args.batch_size)
    phases.end("evaluate_test")

    settings = {
        **run_settings(args, overrides),
        "mixed_precision": mixed,
        "replicas": strategy.num_replicas_in_sync,
        "workers": max(1, multiworker.worker_count()),
    }
    evaluation = evaluation_record(args, features, report, history, fitted, settings, train_counts)
    export_dir = None
    if args.export:
        export_dir, evaluation["export"] = export_run(
            args, fitted.model, features, evaluation, settings, raw_mel=raw_mel
        )
        phases.end("export")
    evaluation["phases_s"] = phases.seconds
    with tf.io.gfile.GFile(join(job_dir, "eval.json"), "w") as handle:
        json.dump(evaluation, handle, indent=2)
    if multiworker.worker_count() > 1:  # as a single process deletes its backup: the run is over, eval.json says so
        tf.io.gfile.rmtree(join(job_dir, "checkpoints"))
    return TrainResult(
        evaluation=evaluation, history=history, model=fitted.model, job_dir=job_dir, export_dir=export_dir
    )


# ----------------------------------------------------------------------------- command


def summary_line(evaluation: dict) -> str:
    def fmt(value):
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"{evaluation['frontend']}: test ROC-AUC {fmt(evaluation['roc_auc'])}, PR-AUC {fmt(evaluation['pr_auc'])} "
        f"over {evaluation['evaluated_tags']} tags on {evaluation['test']['tracks']} tracks; "
        f"{evaluation['params']:,} params, {evaluation['epochs_trained']} epochs, {evaluation['train_time_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = train_and_evaluate(args)
    if not result.evaluation:
        from trainer import multiworker

        print(f"{multiworker.task_name()}: training done; the chief evaluates and writes {result.job_dir}")
        return 0
    print(summary_line(result.evaluation))
    print(f"wrote {result.job_dir}/eval.json" + (f" and {result.export_dir}/" if result.export_dir else ""))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    from runtime.errors import run_command

    sys.exit(run_command("train", main))
