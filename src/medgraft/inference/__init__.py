"""Inference: segmenting one scan (``predictor``), a batch of files, clean-up, export."""
