"""Evaluation: per-class metrics (MONAI) and scoring folders of masks against ground truth."""
