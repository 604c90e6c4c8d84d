"""The handlers every training run attaches: checkpoints, the epoch's line on the console, and
deep supervision when asked for (the run log's is ``run_log.MetricsLogger``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medgraft.models.checkpoint import save_checkpoint
from medgraft.runtime import console
from medgraft.training.deep_supervision import DeepSupervised, deeply_supervised
from medgraft.training.events import Event
from medgraft.training.run_log import EpochResult

if TYPE_CHECKING:
    from medgraft.training.trainer import Trainer


class CheckpointSaver:
    """``last.pt`` after every epoch (validated or not), ``best.pt`` when validation improved;
    Ctrl-C inside an epoch keeps its progress in ``last.pt`` (``--resume`` then re-runs that
    epoch)."""

    def attach(self, trainer: Trainer) -> None:
        if trainer.main:
            trainer.add_event_handler(Event.EPOCH_COMPLETED, self.epoch_completed)
            trainer.add_event_handler(Event.EXCEPTION_RAISED, self.interrupted)

    def epoch_completed(self, trainer: Trainer, result: EpochResult) -> None:
        checkpoint = trainer.checkpoint(result.epoch, result.mean_dice)
        save_checkpoint(checkpoint, trainer.run_dir / "last.pt")
        if trainer.state.improved:
            save_checkpoint(checkpoint, trainer.run_dir / "best.pt")

    def interrupted(self, trainer: Trainer, error: BaseException) -> None:
        if not isinstance(error, KeyboardInterrupt):
            return
        epoch = trainer.state.epoch
        if trainer.state.in_batches:
            state = trainer.checkpoint(epoch - 1, float("nan"))
            state.interrupted_in_epoch = epoch
            save_checkpoint(state, trainer.run_dir / "last.pt")
            trainer.log.event(f"interrupted during epoch {epoch}; saved last.pt")
        console.print(f"interrupted; continue with --resume ({trainer.run_dir / 'last.pt'})")


class EpochReporter:
    """One console line per epoch: loss, validation Dice per class, time."""

    def attach(self, trainer: Trainer) -> None:
        if trainer.main:
            trainer.add_event_handler(Event.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_completed(self, trainer: Trainer, result: EpochResult) -> None:
        console.print(
            f"epoch {result.epoch}: loss {result.loss:.4f}, {self._scores(trainer, result)}"
            f" {result.seconds:.0f}s"
        )

    @staticmethod
    def _scores(trainer: Trainer, result: EpochResult) -> str:
        """The epoch's validation Dice, or that there is none (then every epoch is the best)."""
        if not trainer.val_cases:
            return "no validation cases (best.pt is the last epoch)"
        if not result.validated:
            return f"not validated (every {trainer.config.val_every} epochs and the last)"
        dice = ", ".join(
            f"{n} {d:.3f}" for n, d in zip(trainer.class_names, result.dice, strict=True)
        )
        best = " *best*" if trainer.state.improved else ""
        return f"val Dice {result.mean_dice:.3f} ({dice}){best}"


class DeepSupervision:
    """nnU-Net's deep supervision (``--deep-supervision N``): training-only heads on ``levels``
    decoder stages, trained with the model and resumed with the run, never part of the saved
    model; the loss weighs every stage's output."""

    def __init__(self, levels: int) -> None:
        self.levels = levels

    def attach(self, trainer: Trainer) -> None:
        trainer.add_event_handler(Event.MODEL_BUILT, self.add_heads)
        trainer.add_event_handler(Event.FIT_STARTED, self.weigh_every_stage, first=True)

    def add_heads(self, trainer: Trainer) -> None:
        supervised = DeepSupervised(trainer.model, self.levels).to(trainer.device)
        trainer.training_model = supervised
        trainer.training_state_parts["deep_supervision_heads"] = supervised.heads

    @staticmethod
    def weigh_every_stage(trainer: Trainer) -> None:
        trainer.loss_function = deeply_supervised(trainer.loss_function)
