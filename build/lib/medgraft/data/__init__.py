"""Data layer: dataset discovery, image loading, MONAI transforms and 2.5D slicing."""
