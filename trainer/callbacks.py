"""Keras callbacks whose state survives a killed process, for use beside ``BackupAndRestore``.

``keras.callbacks.BackupAndRestore`` restores the weights, optimizer and epoch after a restart,
but not other callbacks' state: Keras' ``EarlyStopping`` would forget its best loss, patience
counter and best weights, and ``fit``'s History only holds the epochs of the last process.
These two keep their state in files under the job directory (local or gs://), keyed by epoch,
so that whichever epoch ``BackupAndRestore`` resumes from, they resume from the same one.
List them *before* ``BackupAndRestore``: at an epoch's end they write first, so a kill between
the two writes only repeats that epoch.
"""

from __future__ import annotations

import dataclasses
import json
import time
from posixpath import join  # local paths and gs:// URIs alike, without Beam

import keras
import tensorflow as tf

from trainer import schedule


def _write_json(path: str, value) -> None:
    """Write JSON atomically (temporary file, then rename) so a kill never leaves half a file."""
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_json(path: str, default):
    """The JSON value in ``path`` (local or gs://), or ``default`` when the file does not exist."""
    if not tf.io.gfile.exists(path):
        return default
    with tf.io.gfile.GFile(path) as handle:
        return json.load(handle)


class HistoryLog(keras.callbacks.Callback):
    """Every finished epoch's logs (plus ``epoch_time_s``) in ``path`` (JSON), across restarts.

    A repeated epoch (the one running when a process was killed) replaces its earlier entry.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        entries = {int(k): v for k, v in read_json(self.path, {}).items()}
        entries = {k: v for k, v in entries.items() if k < epoch}  # a re-run epoch drops what followed it
        entries[epoch] = {
            **{k: float(v) for k, v in (logs or {}).items()},
            "epoch_time_s": time.perf_counter() - self._start,
        }
        _write_json(self.path, {str(k): v for k, v in sorted(entries.items())})


def read_history(path: str) -> dict:
    """``{metric: [value per epoch]}`` (epochs in order) from a :class:`HistoryLog` file."""
    entries = {int(k): v for k, v in read_json(path, {}).items()}
    epochs = sorted(entries)
    keys = sorted({key for entry in entries.values() for key in entry})
    history = {key: [entries[e].get(key, float("nan")) for e in epochs] for key in keys}
    history["epoch"] = epochs
    return history


class ResumableEarlyStopping(keras.callbacks.Callback):
    """The recipe's per-epoch decisions (:mod:`trainer.schedule`) with resumable state: the best
    weights, the learning-rate rule (``lr_rule``; None leaves the learning rate alone) and early
    stopping after ``patience`` validations without a lower ``monitor`` (None: never).

    Like ``keras.callbacks.EarlyStopping(restore_best_weights=True)`` plus a learning-rate rule,
    but the :class:`trainer.schedule.State` is kept per epoch in ``state_dir/early_stopping.json``
    and the best weights in ``state_dir/best-EPOCH.weights.h5``, so a restarted ``fit`` goes on
    exactly where the killed one stopped (the learning rate itself is in the optimizer, which
    ``BackupAndRestore`` restores). The state is deleted when training ends (after restoring the
    best weights), as ``BackupAndRestore`` deletes its backup.
    """

    KEEP = 3  # epochs of state kept (the resume point is one of the last two)

    def __init__(
        self,
        state_dir: str,
        *,
        monitor: str = "val_loss",
        patience: int | None = 5,
        lr_rule: schedule.Rule | None = None,
    ):
        super().__init__()
        self.state_dir = state_dir
        self.monitor = monitor
        self.patience = patience
        self.lr_rule = lr_rule
        self.rule = dataclasses.replace(lr_rule or schedule.Rule(), early_stopping_patience=patience)
        self._state_path = join(state_dir, "early_stopping.json")
        self._reset()

    def _reset(self):
        self.state = schedule.State()
        self.stopped_epoch = -1
        self._loaded = False

    @property
    def best(self) -> float:
        return self.state.best

    @property
    def wait(self) -> int:
        return self.state.wait

    @property
    def best_epoch(self) -> int:
        return self.state.best_epoch

    def _weights_path(self, epoch: int) -> str:
        return schedule.best_weights_path(self.state_dir, epoch)

    def _entries(self) -> dict:
        return {int(k): v for k, v in read_json(self._state_path, {}).items()}

    def _load(self, epoch: int | None):
        """Take the state after ``epoch`` (None: the latest there is)."""
        self._loaded = True
        entries = self._entries()
        if epoch is None and entries:
            epoch = max(entries)
        entry = entries.get(epoch) if epoch is not None else None
        if entry:
            fields = {field.name for field in dataclasses.fields(schedule.State)}
            self.state = schedule.State(**{k: v for k, v in entry.items() if k in fields})

    def on_train_begin(self, logs=None):
        self._reset()
        tf.io.gfile.makedirs(self.state_dir)

    def on_epoch_begin(self, epoch, logs=None):
        if not self._loaded:  # the first epoch of this process: resume the state of the epoch before
            self._load(epoch - 1 if epoch > 0 else -1)

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        decision = None
        if current is not None:  # else not a validation epoch (validation_freq > 1): nothing to compare
            decision = schedule.advance(self.state, epoch, float(current), self.rule)
            if decision.improved:
                path = self._weights_path(epoch)
                tmp = path.replace(".weights.h5", ".tmp.weights.h5")
                self.model.save_weights(tmp, overwrite=True)
                tf.io.gfile.rename(tmp, path, overwrite=True)
            if self.lr_rule is not None and decision.lr_multiplier != 1:
                optimizer = self.model.optimizer
                optimizer.learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate)) * (
                    decision.lr_multiplier
                )
        if logs is not None and getattr(self.model, "optimizer", None) is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        entries = {k: v for k, v in self._entries().items() if k < epoch}
        entries[epoch] = dataclasses.asdict(self.state)
        entries = dict(sorted(entries.items())[-self.KEEP :])
        _write_json(self._state_path, {str(k): v for k, v in entries.items()})
        self._prune({v["best_epoch"] for v in entries.values()})
        if decision is not None and decision.stop:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def _prune(self, keep: set):
        for path in tf.io.gfile.glob(join(self.state_dir, schedule.BEST_WEIGHTS_GLOB)):
            epoch = schedule.best_weights_epoch(path)
            if epoch is not None and epoch not in keep:
                tf.io.gfile.remove(path)

    def on_train_end(self, logs=None):
        if not self._loaded:  # no epoch ran in this process (all were done before a restart)
            self._load(None)
        if self.best_epoch >= 0 and tf.io.gfile.exists(self._weights_path(self.best_epoch)):
            self.model.load_weights(self._weights_path(self.best_epoch))
        if tf.io.gfile.exists(self.state_dir):
            tf.io.gfile.rmtree(self.state_dir)


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch: loss, validation loss, training examples/s, and the time left.

    The rate counts only the training part of the epoch (up to the start of validation), so
    it is the speed of the steps and the input pipeline together. ``print_fn`` gets each line.
    """

    def __init__(self, label: str, examples_per_epoch: int, epochs: int, print_fn=print):
        super().__init__()
        self.label = label
        self.examples = examples_per_epoch
        self.epochs = epochs
        self.print_fn = print_fn
        self._epoch_start = self._train_end = 0.0
        self._durations: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._train_end = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now, logs = time.perf_counter(), logs or {}
        train_s = max((self._train_end if self._train_end > self._epoch_start else now) - self._epoch_start, 1e-9)
        self._durations.append(now - self._epoch_start)
        # the first epoch includes tracing: estimate from the later ones once there are some
        typical = sorted(self._durations[1:] or self._durations)[len(self._durations[1:] or self._durations) // 2]
        left = typical * max(self.epochs - epoch - 1, 0)

        def fmt(key):
            return f"{logs[key]:.4f}" if key in logs else "n/a"

        self.print_fn(
            f"[{self.label}] epoch {epoch + 1}/{self.epochs}: loss {fmt('loss')}, val loss {fmt('val_loss')}, "
            f"{self.examples / train_s:.0f} examples/s, {now - self._epoch_start:.1f} s; "
            f"about {left:.0f} s left in this run"
        )


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop ``fit`` with :class:`trainer.schedule.NonFiniteLoss` (one line, exit 2 on the command
    line) when an epoch's training or validation loss is NaN or infinite. List it before the
    callbacks that save state, so the poisoned epoch is neither checkpointed nor kept as best."""

    def on_epoch_end(self, epoch, logs=None):
        schedule.check_finite(epoch, logs or {})
