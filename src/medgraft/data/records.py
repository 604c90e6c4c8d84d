"""A dataset's record of one case: where its files are, before anything is read.

Discovery makes them, splits and folds choose among them, loading reads them. Fields rather
than string keys: a misspelt key fails when the code is checked, not deep in a training run.
MONAI's dictionary loading transforms take the files as a ``{"image", "label", "roi"}`` dict;
:meth:`CaseRecord.files` builds it at that boundary only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CaseRecord:
    """One case's name and files; ``label`` is None for an unlabelled (test) case, ``roi`` for a
    case without a region-of-interest mask."""

    case_id: str
    image: str
    """The image file; for a case with several channels, its first channel file."""
    label: str | None = None
    roi: str | None = None

    @property
    def channels(self) -> list[Path]:
        """The case's image files, channel by channel (nnU-Net ``_0000``, ``_0001``, …)."""
        from medgraft.data.io import channel_files  # io pulls in torch and MONAI: only when used

        return channel_files(Path(self.image))

    def files(self) -> dict[str, str]:
        """The files by MONAI key (``image``, and ``label``, ``roi`` where the case has them), as
        the dictionary loading transforms take them."""
        found = {"image": self.image, "label": self.label, "roi": self.roi}
        return {key: path for key, path in found.items() if path is not None}
