"""medgraft: medical image segmentation by transfer learning from natural-image encoders."""

import os

__version__ = "0.1.0"

# albumentations asks PyPI for a newer version of itself when it is imported: a network call at
# every start (and in every DataLoader worker), a 2 s wait and a warning on an air-gapped machine.
# medgraft works offline, so it turns the check off unless the user has set the variable.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
