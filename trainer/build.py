"""The network of a run: built, initialised with the seed's recipe, compiled, and kept in this
process for the next run of the same network.

A lane of the front-end comparison (:mod:`trainer.lanes`) trains the runs of one front-end one
after the other, on growing fractions of the training set: the same network and recipe each
time. Keras traces the train and validation steps again for every new model, about 10 s of a
demo run's first epoch on two cores. With ``keep``, the next run with an equal network and recipe
takes the last run's model instead, with every variable set back to its value right after the
first build: weights, batch-norm statistics, dropout seeds, Adam's slots, step count and learning
rate. It starts where a model built afresh would, and its steps run the graph traced already.
"""

from __future__ import annotations

import json

import keras

from model import network
from trainer import recipe as recipe_lib

_kept: dict[str, tuple] = {}  # per network: (model, train_model, the values of their variables when built)


def compile_for_training(model, n_tags: int, learning_rate: float):
    """A view of ``model`` with only the ``scores`` output, compiled with the seed's recipe."""
    train_model = keras.Model(model.input, model.output["scores"], name=f"{model.name}_scores")
    # Keras' default: XLA on GPUs only. On a CPU it halves a spectrogram step but compiles for
    # minutes on 2 cores, once per batch shape (BENCHMARKS.md "Where a demo arm's time goes").
    train_model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.AUC(curve="ROC", multi_label=True, num_labels=n_tags, name="roc_auc"),
            keras.metrics.AUC(curve="PR", multi_label=True, num_labels=n_tags, name="pr_auc"),
        ],
    )
    # Adam's slots made now, eagerly: made inside the first traced step instead, they cost
    # ~35 ms each and a second trace of the whole step (18.7 -> 11.4 CPU s of first epoch
    # for the demo spectrogram network, BENCHMARKS.md "Where a demo arm's time goes").
    train_model.optimizer.build(train_model.trainable_variables)
    return train_model


def _state(model, train_model) -> list:
    """Every variable a run changes (``variables`` includes the dropout layers' seed states)."""
    return [*model.variables, *train_model.optimizer.variables]


def build_for_run(args, frontend: str, n_tags: int, overrides: dict, *, compile: bool = True, keep: bool = False):
    """``(model, train_model)`` of a run: :func:`network.build_model` with ``overrides``, the
    recipe's initialisation and weight decay, and :func:`compile_for_training` (``train_model`` is
    None without ``compile``).

    With ``keep``, the result is kept for the next call, which reuses it, reset, when ``frontend``,
    ``n_tags``, ``overrides``, the recipe's preset, init, seed, weight decay and learning rate
    and the precision policy are all equal (see the module docstring). Call it under the
    strategy's scope; keep only with the default strategy.
    """
    key = json.dumps(
        [
            frontend,
            n_tags,
            args.preset,
            overrides,
            args.init,
            args.seed,
            args.weight_decay,
            args.learning_rate,
            keras.mixed_precision.global_policy().name,
        ],
        sort_keys=True,
    )
    if keep and compile and key in _kept:
        model, train_model, values = _kept[key]
        for variable, value in zip(_state(model, train_model), values):
            variable.assign(value)
        return model, train_model
    model = network.build_model(frontend, n_tags, args.preset, **overrides)
    recipe_lib.initialise(model, args.init, args.seed)
    recipe_lib.add_weight_decay(model, args.weight_decay)
    train_model = compile_for_training(model, n_tags, args.learning_rate) if compile else None
    if keep and compile:
        _kept[key] = (model, train_model, [variable.numpy() for variable in _state(model, train_model)])
    return model, train_model
