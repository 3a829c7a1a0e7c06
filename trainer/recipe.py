"""The seed's training recipe (musicnn-training's config), applied to a built Keras model.

- Initialisation: every conv and dense kernel drawn again with He's variance scaling
  (``he_normal``: scale 2, fan-in, truncated normal), as the seed's
  ``variance_scaling_initializer()``; ``glorot`` keeps Keras' default (Glorot uniform).
- L2 weight decay on the kernels: the seed adds ``weight_decay * sum(tf.nn.l2_loss(kernel))``
  to the loss, and ``tf.nn.l2_loss`` is half the sum of squares, so each kernel gets a Keras
  ``L2(weight_decay / 2)`` regularizer. Biases and batch-norm parameters are not decayed.
- The learning-rate rule, the best model and early stopping: :mod:`trainer.schedule`.
- One crop per training track per epoch at a random frame offset (``epoch_patches="random"``,
  the seed's): :mod:`trainer.crops` cuts it from the track's consecutive patches and tail.
  ``grid`` keeps one of the track's fixed patches instead, drawn the same way.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from trainer import crops, flags, inputs

INITS = flags.INITS  # --init -> Keras initialiser


def kernels(model) -> list:
    """The conv and dense kernels of ``model`` (what the seed initialises and decays)."""
    found = []
    for layer in model._flatten_layers(include_self=False):
        kernel = getattr(layer, "kernel", None)
        if kernel is not None and isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Dense)):
            found.append(kernel)
    return found


def initialise(model, init: str, seed: int) -> None:
    """Draw every kernel again from ``init`` (see the module docstring); ``glorot`` leaves them."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {sorted(INITS)}")
    if init == "glorot":
        return
    for index, kernel in enumerate(kernels(model)):
        initializer = keras.initializers.get({"class_name": INITS[init], "config": {"seed": seed * 1000 + index}})
        kernel.assign(initializer(kernel.shape, dtype=kernel.dtype))


def add_weight_decay(model, weight_decay: float) -> None:
    """Add the seed's L2 weight decay to every kernel; 0 adds nothing."""
    if weight_decay <= 0:
        return
    regularizer = keras.regularizers.L2(weight_decay / 2.0)
    for kernel in kernels(model):
        kernel.regularizer = regularizer


class EpochCounter(keras.callbacks.Callback):
    """Holds the current epoch in a variable that the training input reads (one patch per epoch)."""

    def __init__(self):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_patches_epoch")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def subset_of(args) -> int:
    """The run's ``--subset`` (0 for callers that predate it)."""
    return getattr(args, "subset", 0)


def epoch_examples(epoch_patches: str, train_counts: dict) -> int:
    """Training examples in one epoch: every patch under ``all``, else one per track."""
    return train_counts["examples"] if epoch_patches == "all" else train_counts["tracks"]


def training_data(args, features, frontend: str, train_counts: dict):
    """``(dataset, examples per epoch, callbacks)`` of the training input under ``--epoch-patches``.

    ``all`` (or ``grid`` on a split where every track has one patch) streams every patch every epoch;
    ``random`` cuts one crop at a random frame offset per track per epoch, ``grid`` keeps one
    of its fixed patches (:func:`trainer.crops.crop_dataset`); both need the :class:`EpochCounter`.
    """
    common = dict(
        batch_size=args.batch_size,
        training=True,
        fraction=args.fraction,
        subset=subset_of(args),
        seed=args.seed,
        shuffle_buffer=args.shuffle_buffer,
    )
    # a random crop of a one-patch track can still reach into its tail: only grid's is its one patch
    if args.epoch_patches == "all" or (
        args.epoch_patches == "grid" and train_counts["tracks"] == train_counts["examples"]
    ):
        data = inputs.make_dataset(features, "train", frontend, n_examples=train_counts["examples"], **common)
        return data, train_counts["examples"], []
    frames = crops.track_frames(features, "train", fraction=args.fraction, subset=subset_of(args))
    counter = EpochCounter()
    data = crops.crop_dataset(
        features,
        frontend,
        frames,
        counter.epoch,
        seed=args.seed,
        batch_size=args.batch_size,
        mode=args.epoch_patches,
        fraction=args.fraction,
        subset=subset_of(args),
        shuffle_buffer=args.shuffle_buffer,
    )
    return data, len(frames), [counter]
