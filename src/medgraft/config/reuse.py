"""Whether a finished run may stand for the run asked for now: only when it was trained with
the same options (their fingerprint, ``options_sha256``). The study and the lab's
cross-validation both ask here, so a changed plan or recipe is never reused silently."""

from __future__ import annotations

from pathlib import Path

from medgraft.errors import MedgraftError


def reuse_finished_run(
    run: Path, trained_with: str | None, asked_for: str, *, redo_changed: bool, asked_by: str
) -> bool:
    """True when ``run`` was trained with the options fingerprinted ``asked_for``: reuse it.
    With other options, False under ``redo_changed`` (train it again), else a one-line
    MedgraftError naming the run and ``--redo-changed``; ``asked_by`` says who asks
    (``"this study"``, ``"the recipe"``)."""
    if trained_with == asked_for:
        return True
    if redo_changed:
        return False
    raise MedgraftError(
        f"{run}: trained with other training options than {asked_by} asks for now (a plan, "
        "recipe or config file changed); pass --redo-changed to retrain it"
    )
