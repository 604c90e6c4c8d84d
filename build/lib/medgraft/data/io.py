"""Reading images and masks through MONAI's loaders, with errors that name the file."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data import MetaTensor
from monai.data.image_reader import PILReader
from monai.transforms import LoadImage
from PIL import Image

from medgraft.data.discovery import is_volume
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
    loader = LoadImage(reader=image_reader(), image_only=True, ensure_channel_first=True)
    try:
        return loader(str(path))
    except Exception as exc:  # readers raise many types; the user needs the file name
        check_readable(path)
        raise MedgraftError(f"{path}: cannot read image ({first_line(root_cause(exc))})") from exc


def check_readable(path: str | Path) -> None:
    """Raise a :class:`MedgraftError` naming ``path`` if it is missing, empty or undecodable.

    Called once loading has failed: MONAI then only says "cannot find a suitable reader",
    hiding the format reader's reason, and for an image/label pair it does not say which
    file is bad. Decoding the file again with its own reader recovers both.
    """
    path = Path(path)
    if not path.is_file():
        raise MedgraftError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MedgraftError(f"{path}: file is empty (0 bytes)")
    try:
        if is_volume(path):
            np.asarray(nib.load(str(path)).dataobj)
        else:
            with Image.open(path) as image:
                image.load()
    except Exception as exc:  # nibabel, gzip and PIL raise many types
        kind = "NIfTI" if is_volume(path) else "2D image"
        raise MedgraftError(f"{path}: not a readable {kind} file ({_reason(exc, path)})") from exc


def _reason(exc: BaseException, path: Path) -> str:
    """The reader's complaint without the path (and the "of"/"from" it leaves dangling),
    which the message already starts with."""
    text = first_line(exc)
    for quoted in (f"'{path}'", f'"{path}"', str(path)):
        text = text.replace(quoted, "")
    text = re.sub(r"\s+(of|from)$", "", " ".join(text.split()).rstrip(" :,.-"))
    return text or type(exc).__name__
