"""Engine layer: training loop, inference and metrics."""
