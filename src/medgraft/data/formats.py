"""The file-name suffixes of the built-in formats (``data.io`` registers the formats themselves,
with their readers and writers) and nnU-Net's channel tag."""

from __future__ import annotations

VOLUME_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
NNUNET_CHANNEL_SUFFIX = "_0000"
