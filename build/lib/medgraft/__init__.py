"""medgraft: medical image segmentation by transfer learning from natural-image encoders."""

__version__ = "0.1.0"
