"""Experiment tracking in MLflow (``--tracker mlflow``), beside the TensorBoard logs every run
writes: researchers compare runs across machines and projects in one MLflow store.

MONAI's ``MLFlowHandler`` is written for ignite engines (it reads ``engine.state`` and
attaches to ignite's events); medgraft's trainer is engine-less, so this handler attaches to
its own events and logs through MLflow's public API. ``mlflow`` is an optional extra, imported
only when a run asks for it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from types import ModuleType
from typing import TYPE_CHECKING, Any

from medgraft.errors import MedgraftError, first_line
from medgraft.runtime import console
from medgraft.training.events import Event
from medgraft.training.run_log import EpochResult, epoch_values

if TYPE_CHECKING:
    from medgraft.training.trainer import Trainer

INSTALL_HINT = "--tracker mlflow needs MLflow: pip install 'medgraft[mlflow]'"
RUN_ID_FILE = "mlflow_run_id.txt"
"""In the run folder: the MLflow run ``--resume`` continues."""
ARTIFACTS = ("config.yaml", "curves.png", "val_cases.csv")
"""Run-folder files copied to the MLflow run once training ended (the other handlers wrote
them by then)."""


def import_mlflow() -> ModuleType:
    """``mlflow``, or one line saying how to install it (raised before any data is read)."""
    try:
        import mlflow
    except ImportError:
        raise MedgraftError(INSTALL_HINT) from None
    return mlflow


class MlflowTracker:
    """Handler: the resolved options and their fingerprint as parameters, every column of
    ``metrics.csv`` per epoch (``step`` = epoch), the last epoch's per-class scores and the
    run's files as artifacts, in the MLflow run of ``$MLFLOW_TRACKING_URI`` (or MLflow's
    local default; ``$MLFLOW_EXPERIMENT_NAME`` picks the experiment)."""

    def __init__(self) -> None:
        self.mlflow = import_mlflow()
        self.run_id: str | None = None
        self.last_result: EpochResult | None = None

    def attach(self, trainer: Trainer) -> None:
        if not trainer.main:
            return
        trainer.add_event_handler(Event.FIT_STARTED, self.start)
        trainer.add_event_handler(Event.EPOCH_COMPLETED, self.epoch_completed)
        trainer.add_event_handler(Event.FIT_COMPLETED, self.finish)
        trainer.add_event_handler(Event.EXCEPTION_RAISED, self.failed)

    def start(self, trainer: Trainer) -> None:
        """A new MLflow run, or, for ``--resume``, the one the run folder names."""
        id_file = trainer.run_dir / RUN_ID_FILE
        resumed = trainer.resume_state is not None and id_file.exists()
        resumed_id = id_file.read_text().strip() if resumed else None
        try:
            run = self.mlflow.start_run(run_id=resumed_id, run_name=trainer.run_dir.name)
        except self.mlflow.exceptions.MlflowException as error:
            if resumed_id is None:
                raise
            raise MedgraftError(
                f"{id_file}: MLflow run {resumed_id} is not in "
                f"{without_credentials(self.mlflow.get_tracking_uri())} "
                f"({first_line(error)}); set MLFLOW_TRACKING_URI to the store it started in, "
                "or delete the file to continue in a new MLflow run"
            ) from None
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id + "\n")
        verb = "continuing" if resumed_id else "tracking in"
        store = without_credentials(self.mlflow.get_tracking_uri())
        console.print(f"{verb} MLflow run {self.run_id} at {store}")
        self.mlflow.set_tags({"medgraft.run_dir": str(trainer.run_dir.resolve())})
        self._log_options(trainer)

    def _log_options(self, trainer: Trainer) -> None:
        """The options as parameters; on a resumed run, parameters are kept (MLflow never
        changes one) and options given anew on resume (``--epochs``…) become tags."""
        options = flat_options(asdict(trainer.config))
        options["options_sha256"] = trainer.resolved["options_sha256"]
        logged = self.mlflow.get_run(self.run_id).data.params
        self.mlflow.log_params({k: v for k, v in options.items() if k not in logged})
        changed = {f"resumed.{k}": v for k, v in options.items() if logged.get(k, v) != v}
        if changed:
            self.mlflow.set_tags(changed)

    def epoch_completed(self, trainer: Trainer, result: EpochResult) -> None:
        values = epoch_values(trainer, result)
        del values["epoch"]
        self.mlflow.log_metrics(finite_metrics(values), step=result.epoch)
        self.last_result = result

    def finish(self, trainer: Trainer) -> None:
        """The last epoch's per-class scores, the best epoch, and the run's files."""
        if self.last_result is not None:
            result = self.last_result
            final = {
                f"final_{metric}_{name}": value
                for metric in trainer.val_metrics
                for name, value in zip(trainer.class_names, result.class_means(metric), strict=True)
            }
            final["final_mean_dice"] = result.mean_dice
            final["best_epoch"] = trainer.state.best_epoch
            self.mlflow.log_metrics(finite_metrics(final), step=result.epoch)
        for name in ARTIFACTS:
            if (trainer.run_dir / name).exists():
                self.mlflow.log_artifact(str(trainer.run_dir / name))
        self.mlflow.end_run("FINISHED")

    def failed(self, trainer: Trainer, error: BaseException) -> None:
        """Ctrl-C ends the MLflow run as KILLED (``--resume`` continues it), an error as FAILED."""
        if self.run_id is not None and self.mlflow.active_run() is not None:
            self.mlflow.end_run("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def flat_options(options: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested options (``augment``, ``inference``) as ``augment.flips``…, every value as text."""
    flat: dict[str, str] = {}
    for name, value in options.items():
        if isinstance(value, dict):
            flat.update(flat_options(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = str(value)
    return flat


def finite_metrics(values: dict[str, float]) -> dict[str, float]:
    """The values MLflow can plot, by names it accepts (a class name may hold any character)."""
    return {
        re.sub(r"[^A-Za-z0-9_.\- ]", "_", name): float(value)
        for name, value in values.items()
        if math.isfinite(value)
    }


def without_credentials(uri: str) -> str:
    """A store's URI fit to print: ``user:password@`` (a database URI's) left out."""
    return re.sub(r"//[^/@]*@", "//", uri)
