"""Reading and writing scans, one registered format per kind of file.

Each :class:`ScanFormat` says which paths it takes, how to read one as a channel-first
``MetaTensor`` (with its affine, for volumes) and how to write a label mask (and class
probabilities) in its own kind of file, so that it opens on the original in a viewer. Training
(through the ``LoadScand`` transform) and ``medgraft predict`` find formats here only, so a new
input format (e.g. multi-channel NIfTI) is one new entry in :data:`FORMATS`. A new kind of
output (e.g. DICOM-SEG) is one registered writer in ``data.writers`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.image_reader import PILReader
from monai.transforms import LoadImage
from PIL import Image

from medgraft.data.dicom import is_dicom_series, read_dicom_series
from medgraft.data.formats import IMAGE_2D_SUFFIXES, NNUNET_CHANNEL_SUFFIX, VOLUME_SUFFIXES
from medgraft.errors import MedgraftError, first_line, root_cause
from medgraft.files import atomic_write


@dataclass(frozen=True)
class ScanGeometry:
    """What a written mask needs to lie on its scan: the affine and, for NIfTI, the header."""

    affine: np.ndarray | None = None
    header: nib.Nifti1Header | None = None
    shape: tuple[int, ...] | None = None
    """Array shape as stored (channels included for a 4D file), when known."""

    @property
    def zooms(self) -> tuple[float, ...]:
        """Voxel size per stored axis: the NIfTI header's, else the affine's column lengths."""
        if self.header is not None:
            return tuple(float(z) for z in self.header.get_zooms())
        return tuple(float(z) for z in np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0))

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL (1 for 2D images, whose pixels have no physical size)."""
        if self.affine is None:
            return 1.0
        return float(abs(np.linalg.det(np.asarray(self.affine)[:3, :3]))) / 1000.0


@dataclass(frozen=True)
class ScanFormat:
    """One kind of input: how to recognise it, read it, and write masks for it.

    A file format lists its ``suffixes``; a format stored as a folder (a DICOM series) gives
    ``is_folder_of`` instead.
    """

    name: str
    volumetric: bool
    read: Callable[[Path], MetaTensor]
    """Channel-first image; volumes carry their affine."""
    geometry: Callable[[Path, MetaTensor], ScanGeometry]
    """Geometry of the scan at a path, given the image as :attr:`read` returned it."""
    mask_suffix: str
    write_mask: Callable[[np.ndarray, ScanGeometry, Path], None]
    """Label map (spatial axes of the input) → file at the given path."""
    write_probabilities: Callable[[np.ndarray, ScanGeometry, Path], None]
    """(classes, spatial…) probabilities → file at the given path."""
    probabilities_suffix: str
    """What :attr:`write_probabilities`'s file adds to the case id."""
    suffixes: tuple[str, ...] = ()
    is_folder_of: Callable[[Path], bool] | None = None
    read_geometry: Callable[[Path], ScanGeometry] | None = None
    """The geometry without decoding the voxels, where the format allows (a NIfTI header);
    None: read the scan (:func:`read_geometry`)."""

    def accepts(self, path: Path) -> bool:
        if self.is_folder_of is not None:
            return path.is_dir() and self.is_folder_of(path)
        return path.is_file() and path.name.lower().endswith(self.suffixes)


def image_reader() -> PILReader:
    """PIL reader in row-major order, so 2D arrays are (H, W) like the files, not MONAI's (W, H).

    NIfTI files fall through to MONAI's NibabelReader, which keeps the stored voxel order; the
    predicted masks are written in that same order with the input's header.
    """
    return PILReader(reverse_indexing=False)


def load_image(path: str | Path) -> MetaTensor:
    """Load an image file as channel-first ``MetaTensor``; any failure is one clear error."""
    path = Path(path)
    loader = LoadImage(reader=image_reader(), image_only=True, ensure_channel_first=True)
    try:
        return loader(str(path))
    except Exception as exc:  # readers raise many types; the user needs the file name
        check_readable(path)
        raise MedgraftError(f"{path}: cannot read image ({first_line(root_cause(exc))})") from exc


def _read_dicom(path: Path) -> MetaTensor:
    volume, affine = read_dicom_series(path)
    return MetaTensor(volume, affine=torch.as_tensor(affine), meta={"filename_or_obj": str(path)})


def _dicom_geometry(path: Path, image: MetaTensor) -> ScanGeometry:
    return ScanGeometry(affine=np.asarray(image.affine, dtype=np.float64))


def _nifti_geometry(path: Path, image: MetaTensor | None = None) -> ScanGeometry:
    """The file's own header: MONAI's metadata does not keep qform/sform codes."""
    try:
        stored = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad files
        check_readable(path)
        raise MedgraftError(f"{path}: cannot read header ({first_line(exc)})") from exc
    return ScanGeometry(affine=stored.affine, header=stored.header, shape=tuple(stored.shape))


def write_nifti_mask(mask: np.ndarray, geometry: ScanGeometry, target: Path) -> None:
    """An integer label map with the input's affine and header (qform/sform kept)."""
    header = geometry.header
    if header is not None:
        header = header.copy()
        header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(mask, geometry.affine, header)
    image.header.set_slope_inter(1, 0)
    if header is None:
        image.set_qform(geometry.affine, code=1)
        image.set_sform(geometry.affine, code=1)
    atomic_write(target, lambda tmp: nib.save(image, str(tmp)))


def write_png_mask(mask: np.ndarray, geometry: ScanGeometry, target: Path) -> None:
    atomic_write(target, lambda tmp: Image.fromarray(mask).save(tmp, format="PNG"))


def write_nifti_probabilities(probs: np.ndarray, geometry: ScanGeometry, target: Path) -> None:
    """A float NIfTI (x, y, z, class) on the input's grid."""
    image = nib.Nifti1Image(np.moveaxis(probs, 0, -1).astype(np.float32), geometry.affine)
    atomic_write(target, lambda tmp: nib.save(image, str(tmp)))


def write_npz_probabilities(probs: np.ndarray, geometry: ScanGeometry, target: Path) -> None:
    """A compressed ``.npz`` (``probabilities``: classes x H x W, float16) for 2D images."""

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, probabilities=probs.astype(np.float16))

    atomic_write(target, save)


FORMATS: list[ScanFormat] = [
    ScanFormat(
        name="nifti",
        volumetric=True,
        suffixes=VOLUME_SUFFIXES,
        read=load_image,
        geometry=_nifti_geometry,
        read_geometry=_nifti_geometry,
        mask_suffix=".nii.gz",
        write_mask=write_nifti_mask,
        write_probabilities=write_nifti_probabilities,
        probabilities_suffix="_probabilities.nii.gz",
    ),
    ScanFormat(
        name="dicom-series",
        volumetric=True,
        is_folder_of=is_dicom_series,
        read=_read_dicom,
        geometry=_dicom_geometry,
        mask_suffix=".nii.gz",
        write_mask=write_nifti_mask,
        write_probabilities=write_nifti_probabilities,
        probabilities_suffix="_probabilities.nii.gz",
    ),
    ScanFormat(
        name="image-2d",
        volumetric=False,
        suffixes=IMAGE_2D_SUFFIXES,
        read=load_image,
        geometry=lambda path, image: ScanGeometry(),
        mask_suffix=".png",
        write_mask=write_png_mask,
        write_probabilities=write_npz_probabilities,
        probabilities_suffix="_probabilities.npz",
    ),
]
"""Every format medgraft reads, tried in order; register a new one by appending it."""


def split_suffix(name: str) -> tuple[str, str]:
    """Split a file name into (stem, suffix), a registered suffix (``.nii.gz``) taken whole."""
    lower = name.lower()
    suffixes = sorted({s for f in FORMATS for s in f.suffixes}, key=len, reverse=True)
    for suffix in suffixes:
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return Path(name).stem, Path(name).suffix


def case_id_of(path: str | Path) -> str:
    """The case name of an image file: its name without suffix and nnU-Net channel tag."""
    stem, _ = split_suffix(Path(path).name)
    if stem.endswith(NNUNET_CHANNEL_SUFFIX):
        stem = stem[: -len(NNUNET_CHANNEL_SUFFIX)]
    return stem


def case_key(case_id: str) -> str:
    """The part of a case id before its first ``_``: DRIVE's ``21_training`` (image),
    ``21_manual1`` (vessels) and ``21_training_mask`` (field of view) all share ``21``."""
    return case_id.split("_", 1)[0]


def pair_cases(cases: dict[str, Path], others: dict[str, Path]) -> dict[str, Path]:
    """For each case id in ``cases``, its file in ``others``: by the same case id; or, when no
    file at all pairs that way (the two folders name their files differently, as DRIVE's
    ``21_training.tif`` and ``21_manual1.gif`` do), by :func:`case_key`, where the key is
    unique on both sides. Mixing the two rules within one folder could pair a case with
    another's file, so a folder that pairs by name at all pairs only by name."""
    paired = {c: others[c] for c in cases if c in others}
    if paired:
        return paired
    by_key: dict[str, list[str]] = {}
    for other in others:
        by_key.setdefault(case_key(other), []).append(other)
    case_keys = [case_key(c) for c in cases]
    for case in cases:
        key = case_key(case)
        if len(by_key.get(key, [])) == 1 and case_keys.count(key) == 1:
            paired[case] = others[by_key[key][0]]
    return paired


def find_format(path: Path) -> ScanFormat | None:
    path = Path(path)
    return next((f for f in FORMATS if f.accepts(path)), None)


def is_volume(path: str | Path) -> bool:
    """Whether ``path`` is a 3D scan of a registered format (a 2D image, or nothing, if not)."""
    found = find_format(Path(path))
    return found is not None and found.volumetric


def list_images(folder: Path) -> list[Path]:
    """Files of a registered format directly inside ``folder``, sorted by name (hidden files
    skipped)."""
    files = (p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in files if find_format(p) is not None)


def format_of(path: Path) -> ScanFormat:
    """The format of ``path``; an unknown kind of file is an error naming it."""
    found = find_format(path)
    if found is None:
        if not Path(path).exists():
            raise MedgraftError(f"{path}: file not found")
        raise MedgraftError(f"{path}: not a file medgraft reads ({supported_kinds()})")
    return found


def supported_kinds() -> str:
    """The registered formats, for error messages."""
    return ", ".join(
        f"{f.name} ({' '.join(f.suffixes)})" if f.suffixes else f"{f.name} (a folder)"
        for f in FORMATS
    )


def read_scan(path: str | Path) -> MetaTensor:
    """Read any registered kind of scan as a channel-first ``MetaTensor``."""
    return format_of(Path(path)).read(Path(path))


def read_geometry(path: str | Path) -> ScanGeometry:
    """The geometry of a scan (affine, voxel size, shape), from its header where possible."""
    path = Path(path)
    scan_format = format_of(path)
    if scan_format.read_geometry is not None:
        return scan_format.read_geometry(path)
    image = scan_format.read(path)
    geometry = scan_format.geometry(path, image)
    channels, *spatial = image.shape  # as NIfTI stores it: channels last, when several
    shape = (*spatial, channels) if channels > 1 else tuple(spatial)
    return ScanGeometry(geometry.affine, geometry.header, shape)


def channel_index(path: Path) -> int | None:
    """``N`` for an nnU-Net channel file ``<case>_NNNN<suffix>``, else None."""
    stem, _ = split_suffix(Path(path).name)
    tag = stem[-5:]
    return int(tag[1:]) if len(stem) > 5 and tag[0] == "_" and tag[1:].isdigit() else None


def channel_files(path: Path) -> list[Path]:
    """The files of one case, channel by channel: for nnU-Net's ``<case>_0000`` the consecutive
    siblings ``<case>_0001``, ``<case>_0002``, …; any other file is its own single channel
    (a 4D NIfTI holds its channels inside)."""
    path = Path(path)
    if channel_index(path) != 0:
        return [path]
    stem, suffix = split_suffix(path.name)
    files = [path]
    while (sibling := path.with_name(f"{stem[:-4]}{len(files):04d}{suffix}")).is_file():
        files.append(sibling)
    return files


def read_channels(path: Path) -> MetaTensor:
    """A case's channels as one channel-first ``MetaTensor`` (see :func:`channel_files`); the
    channel files must share one voxel grid."""
    files = channel_files(path)
    images = [read_scan(f) for f in files]
    first = images[0]
    for file, image in zip(files[1:], images[1:], strict=True):
        same_affine = torch.allclose(
            torch.as_tensor(image.affine, dtype=torch.float64),
            torch.as_tensor(first.affine, dtype=torch.float64),
            atol=1e-3,
        )
        if image.shape[1:] != first.shape[1:] or not same_affine:
            raise MedgraftError(
                f"{file}: channel on another voxel grid than {files[0].name} (shape "
                f"{tuple(image.shape[1:])} vs {tuple(first.shape[1:])}); a case's channels must "
                "share one grid"
            )
    if len(images) == 1:
        return first
    return MetaTensor(torch.cat([i.as_tensor() for i in images]), meta=first.meta)


def list_scans(folder: Path) -> list[Path]:
    """Every scan directly inside ``folder``: image files first, then DICOM series folders. A
    multi-channel case (nnU-Net ``_0000``, ``_0001``, …) is listed once, by its ``_0000`` file."""
    series = sorted(p for p in folder.iterdir() if p.is_dir() and is_dicom_series(p))
    images = list_images(folder)
    names = {p.name for p in images}

    def is_later_channel(path: Path) -> bool:
        index = channel_index(path)
        if not index:
            return False
        stem, suffix = split_suffix(path.name)
        return f"{stem[:-4]}0000{suffix}" in names

    return [p for p in images if not is_later_channel(p)] + series


def check_readable(path: str | Path) -> None:
    """Raise a :class:`MedgraftError` naming ``path`` if it is missing, empty or undecodable.

    Called once loading has failed: MONAI then only says "cannot find a suitable reader",
    hiding the format reader's reason, and for an image/label pair it does not say which
    file is bad. Decoding the file again with its own reader recovers both.
    """
    path = Path(path)
    if path.is_dir() and is_dicom_series(path):
        read_dicom_series(path)  # names the bad file itself
        return
    if not path.is_file():
        raise MedgraftError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MedgraftError(f"{path}: file is empty (0 bytes)")
    name = path.name.lower()
    # NIfTI and 2D images are decoded by their own libraries, whose reasons are clearer than
    # MONAI's; any other registered format by its own reader
    kind = "NIfTI" if name.endswith(VOLUME_SUFFIXES) else None
    kind = kind or ("2D image" if name.endswith(IMAGE_2D_SUFFIXES) else format_of(path).name)
    try:
        if kind == "NIfTI":
            np.asarray(nib.load(str(path)).dataobj)
        elif kind == "2D image":
            with Image.open(path) as image:
                image.load()
        else:
            format_of(path).read(path)
    except MedgraftError:
        raise
    except Exception as exc:  # nibabel, gzip, PIL and other readers raise many types
        raise MedgraftError(f"{path}: not a readable {kind} file ({_reason(exc, path)})") from exc


def _reason(exc: BaseException, path: Path) -> str:
    """The reader's complaint without the path (and the "of"/"from" it leaves dangling),
    which the message already starts with."""
    text = first_line(exc)
    for quoted in (f"'{path}'", f'"{path}"', str(path)):
        text = text.replace(quoted, "")
    text = re.sub(r"\s+(of|from)$", "", " ".join(text.split()).rstrip(" :,.-"))
    return text or type(exc).__name__
