"""musicnn's own training logs, from the ``musicnn`` 0.1.0 wheel, and a run's curves drawn on them.

The wheel that ``tagscale pretrained fetch`` downloads ships, beside each checkpoint, the log of
the run that trained it: ``musicnn/{MTT_musicnn,MTT_vgg,MSD_musicnn,MSD_vgg}/train_log.tsv``,
tab-separated, columns ``Epoch, train_cost, val_cost, epoch_time, learing_rate`` (sic; the time
with an ``s`` after it). Its losses are the same as a tagscale run's ``loss`` / ``val_loss``:
binary cross-entropy plus the L2 weight-decay term. Epoch 1 of musicnn-training only validates
the random weights (its ``train_cost`` is ``nan``); tagscale trains from its first epoch.
"""

from __future__ import annotations

import csv
import math
import os

LOGS = ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg")
LOG_FILE = "train_log.tsv"
OVERLAY_PNG = "curves_vs_musicnn.png"


def log_path(name: str, cache_dir: str | None = None) -> str:
    """The ``train_log.tsv`` of the wheel's model folder ``name``, fetching the wheel with pip
    into the cache when it is not there yet (:func:`model.pretrained.download_wheel`)."""
    from model import pretrained

    if name not in LOGS:
        raise ValueError(f"unknown musicnn log {name!r}; choose one of {LOGS}")
    package = pretrained.unpack_wheel(pretrained.download_wheel(cache_dir), cache_dir)
    return os.path.join(package, name, LOG_FILE)


def read_log(path: str) -> dict[str, list]:
    """A musicnn ``train_log.tsv`` as ``{"epoch", "train_cost", "val_cost", "epoch_time_s",
    "learning_rate"}`` lists, one value per row (epochs 1-based, as in the file)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {
        "epoch": [int(row["Epoch"]) for row in rows],
        "train_cost": [float(row["train_cost"]) for row in rows],
        "val_cost": [float(row["val_cost"]) for row in rows],
        "epoch_time_s": [float(row["epoch_time"].rstrip("s")) for row in rows],
        "learning_rate": [float(row["learing_rate"]) for row in rows],
    }


def lr_change_epochs(log: dict) -> list[int]:
    """The epochs after which the log's learning rate changes (the last epoch of each old rate)."""
    rates, epochs = log["learning_rate"], log["epoch"]
    return [epochs[i - 1] for i in range(1, len(rates)) if rates[i] != rates[i - 1]]


def median_epoch_seconds(log: dict) -> float:
    """The median time of the log's training epochs (its first, validation only, left out)."""
    times = sorted(t for t, cost in zip(log["epoch_time_s"], log["train_cost"]) if not math.isnan(cost))
    return times[len(times) // 2]


def plot_against_log(history: dict, log: dict, path: str, *, label: str = "tagscale", log_label: str = "musicnn"):
    """Write a PNG of a run's validation loss and learning rate per epoch over a musicnn log's.

    Parameters
    ----------
    history : dict
        ``{"epoch": [0-based], "val_loss": [...], "learning_rate": [...]}`` (``history.json`` as
        :func:`trainer.callbacks.read_history` reads it; other keys are ignored). Its
        ``learning_rate`` after epoch ``e`` is the rate of the next epoch, so it is drawn at
        ``e + 2`` (1-based): each curve shows the rate each epoch trained with, as musicnn logs it.
    log : dict
        :func:`read_log`'s.
    path : str
        Where the PNG goes (local or gs://).

    Returns
    -------
    str
        ``path``.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    epochs = [int(e) + 1 for e in history.get("epoch", [])]
    figure, (loss_axis, lr_axis) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    loss_axis.plot(log["epoch"], log["val_cost"], color="gray", linewidth=1, label=f"{log_label} validation loss")
    if history.get("val_loss"):
        loss_axis.plot(epochs, history["val_loss"], color="tab:orange", linewidth=1.5, label=f"{label} validation loss")
    finite = [v for v in [*log["val_cost"][1:], *history.get("val_loss", [])] if math.isfinite(v)]
    if finite:  # the random weights' first validation would flatten the rest
        low, high = min(finite), sorted(finite)[int(0.98 * (len(finite) - 1))]
        loss_axis.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))
    loss_axis.set_ylabel("cross-entropy + L2")
    loss_axis.grid(alpha=0.3)
    loss_axis.legend(fontsize=8)
    lr_axis.step(log["epoch"], log["learning_rate"], where="post", color="gray", label=f"{log_label} learning rate")
    if history.get("learning_rate"):
        lr_axis.step(
            [e + 1 for e in epochs],
            history["learning_rate"],
            where="post",
            color="tab:orange",
            label=f"{label} learning rate",
        )
    lr_axis.set_yscale("log")
    lr_axis.set_xlabel("epoch")
    lr_axis.set_ylabel("learning rate")
    lr_axis.grid(alpha=0.3)
    lr_axis.legend(fontsize=8)
    figure.suptitle(f"{label} against {log_label}'s own training log")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.musicnn_logs JOB_DIR [--log MTT_musicnn] [--cache-dir DIR]``: write
    ``JOB_DIR/curves_vs_musicnn.png``, the run's history.json over the musicnn log."""
    import argparse

    from trainer import callbacks

    parser = argparse.ArgumentParser(
        prog="python -m trainer.musicnn_logs",
        description="Draw a training run's validation loss and learning rate over musicnn's own training log.",
    )
    parser.add_argument("job_dir", help="a `tagscale train` job directory (its history.json)")
    parser.add_argument("--log", choices=LOGS, default="MTT_musicnn", help="the musicnn log to draw (MTT_musicnn)")
    parser.add_argument("--cache-dir", default=None, help="tagscale's cache (default: as `tagscale pretrained`)")
    args = parser.parse_args(argv)
    job_dir = args.job_dir.rstrip("/")
    history = callbacks.read_history(f"{job_dir}/history.json")
    if not history["epoch"]:
        from runtime.errors import TagscaleError

        raise TagscaleError(f"{job_dir}/history.json has no epochs: train first")
    log = read_log(log_path(args.log, args.cache_dir))
    path = plot_against_log(
        history, log, f"{job_dir}/{OVERLAY_PNG}", label=f"tagscale {job_dir.rsplit('/', 1)[-1]}", log_label=args.log
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    import sys

    from runtime.errors import run_command

    sys.exit(run_command("musicnn_logs", main))
