"""Training across machines: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several workers.

Vertex AI (and any cluster manager that follows TensorFlow's convention) sets ``TF_CONFIG`` on
every replica of a job: the cluster (``chief`` and ``worker`` task addresses) and this task's
type and index. With more than one such task, :func:`trainer.task.device_setup` picks
``tf.distribute.MultiWorkerMirroredStrategy`` and :func:`fit` below trains instead of Keras
``fit``: under Keras 3, ``Model.fit`` cannot consume the per-replica batches of a multi-worker
strategy (it fails converting a ``PerReplica`` value to a tensor), so the multi-worker path is
a small custom loop (``strategy.run`` over ``strategy.experimental_distribute_dataset``) with
the same recipe: Adam, binary cross-entropy plus the kernels' L2 terms, and the same per-epoch
decisions as the Keras path (:mod:`trainer.schedule`: learning-rate rule, the model of the
lowest validation loss kept, optional early stopping), their state checkpointed.

Every worker trains; only the chief writes into the job directory::

    JOB/checkpoints/ckpt-N*          weights, optimizer, epoch and the loop's state (all workers read them)
    JOB/checkpoints/best-EPOCH.weights.h5   the weights of the lowest validation loss so far
    JOB/history.json                 per-epoch logs, across restarts

A checkpoint save is a step every worker must take (distributed variables), so the other
workers save theirs into a local scratch directory that is deleted when they finish. After a
restart of all workers, every one restores the chief's latest checkpoint (the job directory
must be shared storage, gs:// on Vertex AI) and training goes on after its epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from posixpath import join  # local paths and gs:// URIs alike, without Beam

LOG = logging.getLogger("tagscale.multiworker")
TRAINING_TASKS = ("chief", "worker")  # evaluator and ps tasks do not train in the ring


def tf_config(environ=None) -> dict:
    """The parsed ``TF_CONFIG`` (``{}`` when unset or empty)."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    return json.loads(text) if text.strip() else {}


def worker_count(config: dict | None = None) -> int:
    """How many tasks of ``config`` (default: ``TF_CONFIG``) train: its chief and workers."""
    config = tf_config() if config is None else config
    cluster = config.get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in TRAINING_TASKS)


def is_chief(config: dict | None = None) -> bool:
    """The chief task, or worker 0 of a cluster without one; True outside a cluster."""
    config = tf_config() if config is None else config
    task = config.get("task", {})
    kind, index = task.get("type", "chief"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and not config.get("cluster", {}).get("chief")


def task_name(config: dict | None = None) -> str:
    config = tf_config() if config is None else config
    task = config.get("task", {})
    return f"{task.get('type', 'chief')} {task.get('index', 0)}"


@dataclasses.dataclass
class Outcome:
    """What :func:`fit` leaves: the best epoch and its weights file (chief), the wall time."""

    chief: bool
    best_epoch: int
    best_weights: str | None
    fit_wall_s: float
    start_epoch: int


class LoopState:
    """The loop's own state, saved in every checkpoint beside the weights (plain local variables:
    every worker computes the same values from the same all-reduced losses)."""

    def __init__(self):
        import tensorflow as tf

        def var(value, dtype):
            return tf.Variable(value, dtype=dtype, trainable=False)

        self.epoch = var(0, tf.int64)  # epochs finished
        self.best = var(math.inf, tf.float64)
        self.best_epoch = var(-1, tf.int64)
        self.wait = var(0, tf.int64)  # epochs since the best (early stopping)
        self.plateau_best = var(math.inf, tf.float64)  # trainer.schedule.State's lr_best
        self.plateau_wait = var(0, tf.int64)  # and lr_wait (names kept: older checkpoints restore)

    def trackables(self) -> dict:
        return {name: getattr(self, name) for name in vars(self)}


def make_steps(strategy, model, optimizer, n_tags: int, mixed: bool, train_spec, eval_spec):
    """``(train_step, eval_step, metrics)``: tf.functions taking a distributed batch (of the element
    specs of the distributed datasets), returning the loss."""
    import keras
    import tensorflow as tf

    bce = keras.losses.BinaryCrossentropy(reduction=None)
    with strategy.scope():
        metrics = {
            "roc_auc": keras.metrics.AUC(curve="ROC", multi_label=True, num_labels=n_tags, name="roc_auc"),
            "val_roc_auc": keras.metrics.AUC(curve="ROC", multi_label=True, num_labels=n_tags, name="val_roc_auc"),
        }

    def loss_of(labels, scores):
        loss = tf.nn.compute_average_loss(bce(labels, tf.cast(scores, tf.float32)))
        if model.losses:  # the kernels' L2 terms, split over the replicas as the data loss is
            loss += tf.nn.scale_regularization_loss(tf.add_n([tf.cast(x, tf.float32) for x in model.losses]))
        return loss

    def forward_and_gradients(inputs, labels):
        with tf.GradientTape() as tape:
            scores = model(inputs, training=True)["scores"]
            loss = loss_of(labels, scores)
            scaled = optimizer.scale_loss(loss) if mixed else loss
        metrics["roc_auc"].update_state(labels, tf.cast(scores, tf.float32))
        return loss, tape.gradient(scaled, model.trainable_variables)

    def nothing_to_train():
        return tf.constant(0.0), [tf.zeros_like(v) for v in model.trainable_variables]

    def replica_train(inputs, labels):
        # Every replica takes part in the gradients' all-reduce (apply_gradients), also one
        # whose share of the last partial batch is empty: it adds zeros.
        loss, gradients = non_empty(inputs, lambda: forward_and_gradients(inputs, labels), nothing_to_train)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    def forward_eval(inputs, labels):
        scores = model(inputs, training=False)["scores"]
        metrics["val_roc_auc"].update_state(labels, tf.cast(scores, tf.float32))
        return loss_of(labels, scores)

    def replica_eval(inputs, labels):
        return non_empty(inputs, lambda: forward_eval(inputs, labels), lambda: tf.constant(0.0))

    # One trace per step function: a last, smaller batch would otherwise trace (and build the
    # collectives of) the whole step again, which costs more than an epoch of this loop on a CPU.
    @tf.function(input_signature=[train_spec])
    def train_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_train, args=batch), axis=None)

    @tf.function(input_signature=[eval_spec])
    def eval_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_eval, args=batch), axis=None)

    return train_step, eval_step, metrics


def non_empty(inputs, compute, empty):
    """``compute()``, or ``empty()`` when this replica's batch holds no example.

    A multi-worker strategy hands the replicas of a worker whose shard ran out first an empty
    batch while the others finish theirs. No layer needs to see one: oneDNN's convolutions
    return a wrongly shaped (0, time, channels) tensor for it (the input's time length on
    AVX-512, a broadcasting error on some AVX2 shapes), which broke the sample-level
    front-end's pooling in the eval step.
    """
    import tensorflow as tf

    return tf.cond(tf.shape(inputs)[0] > 0, compute, empty)


def run_epoch(step, dataset) -> float:
    """The mean loss per batch of one pass of ``step`` over a distributed dataset."""
    total, batches = 0.0, 0
    for batch in dataset:
        total += float(step(batch))
        batches += 1
    return total / max(batches, 1)


def update_state(state: LoopState, epoch: int, val_loss: float | None, args, optimizer) -> tuple[bool, bool]:
    """Best model, learning-rate rule and early stopping after ``epoch`` (:func:`trainer.schedule.advance`
    on the checkpointed variables): ``(improved, stop)``."""
    from trainer import schedule

    if val_loss is None:  # not a validation epoch: nothing to compare
        return False, False
    current = schedule.State(
        best=float(state.best.numpy()),
        best_epoch=int(state.best_epoch.numpy()),
        wait=int(state.wait.numpy()),
        lr_best=float(state.plateau_best.numpy()),
        lr_wait=int(state.plateau_wait.numpy()),
    )
    decision = schedule.advance(current, epoch, val_loss, schedule.Rule.from_args(args))
    state.best.assign(current.best)
    state.best_epoch.assign(current.best_epoch)
    state.wait.assign(current.wait)
    state.plateau_best.assign(current.lr_best)
    state.plateau_wait.assign(current.lr_wait)
    if decision.lr_multiplier != 1:
        optimizer.learning_rate = float(optimizer.learning_rate.numpy()) * decision.lr_multiplier
    return decision.improved, decision.stop


def _prune_best(state_dir: str, keep: int) -> None:
    import tensorflow as tf

    from trainer import schedule

    for path in tf.io.gfile.glob(join(state_dir, schedule.BEST_WEIGHTS_GLOB)):
        if path.rsplit("/", 1)[-1] != schedule.BEST_WEIGHTS.format(epoch=keep):
            tf.io.gfile.remove(path)


def restore(strategy, model, args, mixed: bool, state_dir: str, save_dir: str):
    """``(optimizer, state, manager, latest)``: the optimizer (built under the strategy), the loop
    state and a checkpoint manager saving into ``save_dir``, all restored from the latest
    checkpoint in ``state_dir`` (``latest``; None when there is none)."""
    import keras
    import tensorflow as tf

    with strategy.scope():
        optimizer = keras.optimizers.Adam(args.learning_rate)
        if mixed:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)  # slots exist before a restore, so it is not deferred
    state = LoopState()
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **state.trackables())
    manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=2)
    latest = tf.train.latest_checkpoint(state_dir)
    if latest:
        checkpoint.restore(latest).expect_partial()
    return optimizer, state, manager, latest


def epoch_logs(epoch: int, args, steps, datasets, metrics, progress) -> dict:
    """Train one epoch (and validate when ``--validation-freq`` says so); the epoch's logs."""
    train_step, eval_step = steps
    for metric in metrics.values():
        metric.reset_state()
    logs = {"loss": run_epoch(train_step, datasets[0]), "roc_auc": float(metrics["roc_auc"].result())}
    if (epoch + 1) % args.validation_freq == 0:
        progress.on_test_begin()
        logs["val_loss"] = run_epoch(eval_step, datasets[1])
        logs["val_roc_auc"] = float(metrics["val_roc_auc"].result())
    return logs


def fit(strategy, model, args, train_data, valid_data, *, job_dir, label, n_tags, epoch_examples, epoch_counter, mixed):
    """Train ``model`` (built under ``strategy.scope()``) for ``args.epochs`` epochs; resume from the
    chief's latest checkpoint. Returns an :class:`Outcome`; the caller evaluates and exports on the chief."""
    import tensorflow as tf

    from trainer import callbacks, schedule

    chief = is_chief()
    state_dir = join(job_dir, "checkpoints")
    scratch = None if chief else tempfile.mkdtemp(prefix="tagscale-worker-")
    optimizer, state, manager, latest = restore(strategy, model, args, mixed, state_dir, scratch or state_dir)
    start = int(state.epoch.numpy())
    if start:
        print(f"[{label}] resuming after epoch {start} from {latest}", flush=True)
    datasets = [strategy.experimental_distribute_dataset(data) for data in (train_data, valid_data)]
    train_step, eval_step, metrics = make_steps(
        strategy, model, optimizer, n_tags, mixed, datasets[0].element_spec, datasets[1].element_spec
    )
    history = callbacks.HistoryLog(join(job_dir, "history.json"))
    progress = callbacks.EpochProgress(
        label if chief else f"{label} {task_name()}",
        epoch_examples,
        args.epochs,
        print_fn=lambda line: print(line, flush=True),
    )
    clock = time.perf_counter()
    train_step.get_concrete_function(), eval_step.get_concrete_function()
    LOG.info("%s: traced the steps in %.1f s", task_name(), time.perf_counter() - clock)
    try:
        for epoch in range(start, args.epochs):
            if epoch_counter is not None:
                epoch_counter.epoch.assign(epoch)
            history.on_epoch_begin(epoch)
            progress.on_epoch_begin(epoch)
            logs = epoch_logs(epoch, args, (train_step, eval_step), datasets, metrics, progress)
            schedule.check_finite(epoch, logs)  # every worker sees the same all-reduced losses: all stop
            improved, stop = update_state(state, epoch, logs.get("val_loss"), args, optimizer)
            logs["learning_rate"] = float(optimizer.learning_rate.numpy())
            if chief:  # history and best weights first: a kill before the checkpoint only repeats this epoch
                history.on_epoch_end(epoch, logs)
                if improved:
                    tf.io.gfile.makedirs(state_dir)
                    model.save_weights(schedule.best_weights_path(state_dir, epoch))
            state.epoch.assign(epoch + 1)
            manager.save()  # every worker: saving distributed variables is a collective step
            if chief:
                _prune_best(state_dir, int(state.best_epoch.numpy()))
            progress.on_epoch_end(epoch, logs)
            if stop:
                break
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    best_epoch = int(state.best_epoch.numpy())
    best = schedule.best_weights_path(state_dir, best_epoch) if chief and best_epoch >= 0 else None
    return Outcome(chief, best_epoch, best, time.perf_counter() - clock, start)
