"""Events of a training run and the handlers that attach to them, as MONAI's handlers attach to
an ignite engine: the run log, checkpoints, snapshots and deep supervision are handlers, so a
trainer variant adds behaviour by attaching one instead of overriding the loop."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol


class Event(Enum):
    MODEL_BUILT = "model_built"
    """The U-Net is on its device; training-only parts may wrap ``training_model`` now."""
    FIT_STARTED = "fit_started"
    """Everything is built and a resumed run restored; the first epoch is next."""
    EPOCH_STARTED = "epoch_started"
    ITERATION_COMPLETED = "iteration_completed"
    """After each optimisation step; ``trainer.state.loss`` holds its loss."""
    EPOCH_COMPLETED = "epoch_completed"
    """On the main process, after validation (``EpochResult.validated`` says whether the epoch
    was), with the :class:`EpochResult`."""
    FIT_COMPLETED = "fit_completed"
    """Every epoch trained, or a handler called ``trainer.terminate()``."""
    EXCEPTION_RAISED = "exception_raised"
    """Training stopped on an exception (Ctrl-C among them), passed to the handler."""


class Handler(Protocol):
    """Anything that attaches its functions to a trainer's events."""

    def attach(self, trainer: Any) -> None: ...


class EventEmitter:
    """Functions registered per event, called in order with the trainer and the event's value."""

    def __init__(self) -> None:
        self._handlers: dict[Event, list[Callable[..., None]]] = {event: [] for event in Event}

    def add_event_handler(
        self, event: Event, function: Callable[..., None], *, first: bool = False
    ) -> None:
        """Call ``function(trainer, *values)`` on ``event``; ``first`` puts it before the
        functions attached so far (a clock read before checkpoints are written)."""
        functions = self._handlers[event]
        functions.insert(0, function) if first else functions.append(function)

    def fire(self, event: Event, *values: Any) -> None:
        for function in list(self._handlers[event]):
            function(self, *values)
