"""Property-based checks: whatever a user's folder or label file holds, medgraft either accepts
it or says what is wrong with a :class:`MedgraftError` (never a bare ``KeyError``/``TypeError``
or a crash deep inside MONAI)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medgraft.data.discovery import DatasetSpec, discover_dataset
from medgraft.data.transforms import Preprocessing, case_transforms
from medgraft.errors import MedgraftError, root_cause

FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow],
)

SUFFIXES = [".nii.gz", ".nii", "_0000.nii.gz", ".png", ".JPG", ".tiff", ".mha", ".txt", ""]
LAYOUTS = {
    "folder": ("images", "labels"),
    "masks": ("images", "masks"),
    "nnunet": ("imagesTr", "labelsTr"),
    "flat": ("", ""),
}
# file-system-safe but not ASCII-only: accents, CJK, spaces, dashes, dots inside
stems = st.text(
    st.sampled_from("abcXYZ019_- .éü中"),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in {".", ".."})
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 300)
    | st.floats(allow_nan=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def dataset_folders(draw) -> tuple[str, list[str], object]:
    """A layout, relative file paths, and what goes into dataset.json (absent, text, JSON)."""
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    images, labels = LAYOUTS[layout]
    names = draw(st.lists(st.tuples(stems, st.sampled_from(SUFFIXES)), max_size=5))
    files = []
    for stem, suffix in names:
        files.append(str(Path(images) / f"{stem}{suffix}"))
        if draw(st.booleans()):
            label_suffix = draw(st.sampled_from(SUFFIXES))
            files.append(str(Path(labels) / f"{stem.removesuffix('_0000')}{label_suffix}"))
    reference = st.sampled_from(files) if files else st.text(max_size=6)
    entry = st.fixed_dictionaries({"image": reference, "label": reference}) | json_values
    msd = st.fixed_dictionaries(
        {"training": st.lists(entry, max_size=3) | json_values},
        optional={
            "test": st.lists(reference | entry, max_size=2) | json_values,
            "labels": st.dictionaries(st.text("0123ab", max_size=2), json_values, max_size=3)
            | json_values,
            "modality": json_values,
        },
    )
    manifest = draw(st.none() | st.binary(max_size=20) | json_values | msd)
    return layout, files, manifest


@FUZZ
@given(dataset_folders())
def test_discovery_returns_a_spec_or_a_medgraft_error(folder) -> None:
    _, files, manifest = folder
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for relative in files:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(b"")
        if isinstance(manifest, bytes):
            (root / "dataset.json").write_bytes(manifest)
        elif manifest is not None:
            (root / "dataset.json").write_text(json.dumps(manifest))
        try:
            spec = discover_dataset(root)
        except MedgraftError as exc:
            assert str(exc).strip() and "\n" not in str(exc)
            return
    assert isinstance(spec, DatasetSpec) and spec.training
    assert len({r.case_id for r in spec.training}) == len(spec.training)


DTYPES = [np.uint8, np.int16, np.int32, np.float32, np.float64]


@st.composite
def affines(draw) -> np.ndarray:
    """Scaled, flipped, permuted and possibly oblique axes plus a translation; now and then
    degenerate (a zero axis)."""
    scales = draw(st.lists(st.sampled_from([0.5, 1.0, 3.0, -1.0, -2.0, 0.0]), min_size=3))
    angle = draw(st.sampled_from([0.0, 0.0, 0.3]))
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(scales[:3])[:, draw(st.permutations([0, 1, 2]))]
    affine[:3, 3] = draw(st.lists(st.sampled_from([0.0, -10.0, 2.5]), min_size=3, max_size=3))
    return affine


@st.composite
def label_cases(draw) -> dict:
    """An image/label pair: mostly matching 3D grids, so the label values get checked too."""
    ndim = draw(st.sampled_from([3, 3, 3, 2, 4]))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    other_shape = st.lists(st.integers(1, 5), min_size=3, max_size=3).map(tuple)
    dtype = draw(st.sampled_from(DTYPES))
    kind = np.dtype(dtype).kind
    values = (
        st.integers(0, 4) | st.just(255)
        if kind == "u"
        else st.integers(-2, 4)
        if kind == "i"
        else st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5, -1.0, np.nan, np.inf, 1e30])
    )
    label_shape = draw(st.sampled_from([shape] * 3) | other_shape)
    image_affine = draw(affines())
    return {
        "image": draw(arrays(np.float32, shape, elements=st.floats(-5, 5, width=32))),
        "label": draw(arrays(dtype, label_shape, elements=values)),
        "image_affine": image_affine,
        "label_affine": draw(st.sampled_from([image_affine] * 2) | affines()),
        "allowed": draw(st.none() | st.sampled_from([[0, 1], [0, 1, 2], [0, 2, 3]])),
        "spacing": draw(st.sampled_from([None, (1.0, 1.0, 0.0), (2.0, 0.7, 1.0)])),
    }


def save_with_sform(array: np.ndarray, affine: np.ndarray, path: str) -> None:
    """Store the affine as the sform only: nibabel refuses to build a qform from a degenerate
    affine, but files with one exist (and must be refused by medgraft, not crash it). The
    voxel sizes agree with it, or MONAI would rebuild the affine from them."""
    image = nib.Nifti1Image(array, None)
    image.set_sform(affine, code="scanner")
    zooms = [*np.linalg.norm(affine[:3, :3], axis=0), 1.0]
    image.header.set_zooms(zooms[: array.ndim])
    nib.save(image, path)


@FUZZ
@given(label_cases())
def test_label_checks_accept_or_raise_a_medgraft_error(case: dict) -> None:
    prep = Preprocessing(volumetric=True, spacing=case["spacing"])
    transform = case_transforms(prep, with_label=True, allowed_labels=case["allowed"])
    with tempfile.TemporaryDirectory() as tmp:
        record = {"image": f"{tmp}/image.nii.gz", "label": f"{tmp}/label.nii.gz"}
        save_with_sform(case["image"], case["image_affine"], record["image"])
        save_with_sform(case["label"], case["label_affine"], record["label"])
        try:
            out = transform(record)
        except Exception as exc:  # MONAI's Compose wraps what its transforms raise
            cause = root_cause(exc)
            assert isinstance(cause, MedgraftError), repr(cause)
            assert "\n" not in str(cause) and f"{tmp}/" in str(cause)
            return
    label = out["label"]
    assert label.dtype == torch.int64 and label.shape[1:] == out["image"].shape[1:]
    if case["allowed"] is not None:
        assert set(torch.unique(label).tolist()) <= set(case["allowed"])
