"""Reading images and masks through MONAI's loaders, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from monai.data import MetaTensor
from monai.data.image_reader import PILReader
from monai.transforms import LoadImage

from medgraft.errors import MedgraftError, first_line, root_cause


def image_reader() -> PILReader:
    """PIL reader in row-major order, so 2D arrays are (H, W) like the files, not MONAI's (W, H).

    NIfTI files fall through to MONAI's NibabelReader, which keeps the stored voxel order; the
    predicted masks are written in that same order with the input's header.
    """
    return PILReader(reverse_indexing=False)


def load_image(path: str | Path) -> MetaTensor:
    """Load an image as channel-first ``MetaTensor``; any failure becomes one clear error."""
    path = Path(path)
    if not path.is_file():
        raise MedgraftError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MedgraftError(f"{path}: file is empty (0 bytes)")
    loader = LoadImage(reader=image_reader(), image_only=True, ensure_channel_first=True)
    try:
        return loader(str(path))
    except Exception as exc:  # readers raise many types; the user needs the file name
        raise MedgraftError(f"{path}: cannot read image ({first_line(root_cause(exc))})") from exc
