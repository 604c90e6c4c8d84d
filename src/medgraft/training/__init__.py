"""Training: the ``Trainer`` and its hooks, losses, optimisers and schedules, the run log."""
