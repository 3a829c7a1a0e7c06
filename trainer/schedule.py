"""The per-epoch decisions of the recipe: best model, learning-rate rule and early stopping.

One implementation, in plain Python, for both training paths: the Keras path keeps a
:class:`State` in :class:`trainer.callbacks.ResumableEarlyStopping`'s state file, the
multi-worker loop in its checkpointed ``LoopState`` variables; both call :func:`advance`
once per validated epoch, so the two paths (and a restarted job) take the same decisions.

Two learning-rate rules (``--lr-schedule``):

- ``cumulative``: musicnn-training's (once called ``seed``). A counter of validations that did
  not beat the best loss (strict ``<``, no margin) is never reset by an improvement. After each
  validation, *first* the learning rate is multiplied by the factor when the counter has reached
  the patience (the counter then starts again from 0), *then* this validation's non-improvement
  is counted: the order of musicnn-training's loop, so the halving comes one validation after
  the one that brought the counter to the patience. Over a long run it halves about every
  ``patience + 1`` non-improving epochs, improvements in between or not. Replayed on musicnn's
  own training logs this gives exactly the epochs at which their learning rate changes.
- ``plateau``: Keras' ``ReduceLROnPlateau`` (mode min, ``min_delta`` 1e-4, no cooldown): the
  counter is reset by every loss lower than its own best by more than ``min_delta``, so the
  learning rate drops only after ``patience`` consecutive epochs without such a loss.

The best model is the one of the lowest validation loss (strict ``<``); early stopping counts
the validations since it. A NaN loss counts as no improvement everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from posixpath import join  # local paths and gs:// URIs alike, without Beam

from runtime.errors import TagscaleError

SCHEDULES = ("cumulative", "plateau")
SCHEDULE_ALIASES = {"seed": "cumulative"}  # the old spelling of --lr-schedule
PLATEAU_MIN_DELTA = 1e-4  # Keras ReduceLROnPlateau's default
# The weights of a run's best epoch so far, in its state directory, as both training paths name them.
BEST_WEIGHTS = "best-{epoch:05d}.weights.h5"
BEST_WEIGHTS_GLOB = BEST_WEIGHTS.replace("{epoch:05d}", "*")


def best_weights_path(state_dir: str, epoch: int) -> str:
    """Where the best weights of ``epoch`` live in ``state_dir`` (:data:`BEST_WEIGHTS`)."""
    return join(state_dir, BEST_WEIGHTS.format(epoch=epoch))


def best_weights_epoch(path: str) -> int | None:
    """The epoch of a :data:`BEST_WEIGHTS` file at ``path``; None for any other file name."""
    prefix, suffix = BEST_WEIGHTS.split("{epoch:05d}")
    name = path.rsplit("/", 1)[-1]
    middle = name[len(prefix) : -len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
    return int(middle) if middle.isdigit() else None


@dataclasses.dataclass
class State:
    """What the decisions remember between epochs (JSON- and checkpoint-friendly scalars)."""

    best: float = math.inf  # lowest validation loss so far
    best_epoch: int = -1
    wait: int = 0  # validations since the best (early stopping)
    lr_best: float = math.inf  # the plateau rule's own best (with its margin)
    lr_wait: int = 0  # the learning-rate rule's counter


@dataclasses.dataclass(frozen=True)
class Rule:
    """The recipe's settings for :func:`advance`."""

    schedule: str = "cumulative"
    patience: int = 75
    factor: float = 0.5
    early_stopping_patience: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "schedule", SCHEDULE_ALIASES.get(self.schedule, self.schedule))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.schedule!r}; choose one of {SCHEDULES}")

    @classmethod
    def from_args(cls, args) -> Rule:
        return cls(
            schedule=getattr(args, "lr_schedule", "cumulative"),
            patience=args.lr_plateau_patience,
            factor=args.lr_plateau_factor,
            early_stopping_patience=args.early_stopping_patience,
        )


@dataclasses.dataclass(frozen=True)
class Decision:
    """After one validated epoch: a new best model, the learning-rate multiplier, stop or not."""

    improved: bool
    lr_multiplier: float
    stop: bool


def advance(state: State, epoch: int, val_loss: float, rule: Rule) -> Decision:
    """Update ``state`` in place with ``epoch``'s validation loss; what to do after it."""
    finite = not math.isnan(val_loss)
    improved = finite and val_loss < state.best
    if improved:
        state.best, state.best_epoch, state.wait = float(val_loss), int(epoch), 0
    else:
        state.wait += 1
    multiplier = 1.0
    if rule.schedule == "cumulative":
        if state.lr_wait >= rule.patience:  # the count of the validations before this one
            multiplier, state.lr_wait = rule.factor, 0
        if not improved:  # then this one; an improvement leaves the counter where it is
            state.lr_wait += 1
    else:
        if finite and val_loss < state.lr_best - PLATEAU_MIN_DELTA:
            state.lr_best, state.lr_wait = float(val_loss), 0
        else:
            state.lr_wait += 1
            if state.lr_wait >= rule.patience:
                multiplier, state.lr_wait = rule.factor, 0
    patience = rule.early_stopping_patience
    return Decision(improved, multiplier, patience is not None and state.wait >= patience)


def halving_epochs(val_losses, rule: Rule) -> list[int]:
    """The 1-based epochs after which ``rule`` changes the learning rate, replaying ``val_losses``."""
    state = State()
    return [epoch + 1 for epoch, loss in enumerate(val_losses) if advance(state, epoch, loss, rule).lr_multiplier != 1]


class NonFiniteLoss(TagscaleError):
    """Training produced a NaN or infinite loss: going on would only train on garbage."""


def check_finite(epoch: int, logs: dict) -> None:
    """Raise :class:`NonFiniteLoss` when ``logs``' training or validation loss is not finite.

    Once one batch yields a NaN, the weights are NaN and every later epoch is lost, yet the
    epoch-mean losses still print and the run would end with exit status 0.
    """
    for key, what in (("loss", "training"), ("val_loss", "validation")):
        value = logs.get(key)
        if value is not None and not math.isfinite(float(value)):
            # A NaN input can leave the training loss finite (max-pooling drops it) and still turn
            # the batch norms' moving statistics NaN: then only the validation loss shows it.
            raise NonFiniteLoss(
                f"the {what} loss is {float(value)} in epoch {epoch + 1}: the train or valid shards hold "
                "non-finite values, or the learning rate is too high; training stopped"
            )
