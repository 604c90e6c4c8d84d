"""Trainer variants by name: ``--trainer NAME`` picks one, as nnU-Net's ``-tr`` does.

A variant subclasses :class:`~medgraft.training.trainer.Trainer`, overrides one public hook or
attaches a handler, and is added here: with ``@TRAINERS.register("name")`` on the class, or, for
the shipped ones, declared by reference so that listing the names imports no torch. The name is
recorded in ``config.json`` and every checkpoint; prediction never needs the variant.
"""

from __future__ import annotations

from medgraft.registry import Registry

TRAINERS: Registry[type] = Registry("trainer", "--trainer")
TRAINERS.declare(
    "default",
    "medgraft.training.trainer:Trainer",
    help="Fine-tune for --epochs, validating every --val-every epochs and after the last",
)
TRAINERS.declare(
    "cpu-budget",
    "medgraft.training.cpu_budget:CPUBudgetTrainer",
    help="Train on a CPU-time clock with snapshots at --cpu-budget-minutes (learning speed)",
)
