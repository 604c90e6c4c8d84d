"""Mask writers: a new output is one registered function, selectable by ``--output-format``;
the registry lists its names without torch; unknown names and aliases behave."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import invoke, write_nifti
from test_layers import loaded_modules

from medgraft.data.writers import MASK_WRITERS, CaseOutput, chosen_writers, mask_writer
from medgraft.files import atomic_write


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    """A saved, untrained 2.5D model: prediction runs, what it predicts does not matter."""
    from medgraft.data.transforms import Preprocessing
    from medgraft.models.checkpoint import Checkpoint, ModelInputs, save_checkpoint
    from medgraft.models.registry import get_encoder
    from medgraft.models.unet import architecture, build_segmenter

    spec = get_encoder("tu-tf_efficientnet_lite0")
    arch = architecture(spec, 3, 2)
    inputs = ModelInputs(Preprocessing(volumetric=True), slices=3, labels={"0": "bg", "1": "fg"})
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(Checkpoint(arch, inputs, build_segmenter(arch, spec).state_dict()), path)
    return path


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_nifti(folder / "scan.nii.gz", np.random.default_rng(0).random((32, 32, 4), np.float32))
    return folder


@pytest.fixture
def npy_writer():
    """An output medgraft does not ship, registered for one test as one decorated function."""

    @mask_writer("npy", suffix="_mask.npy")
    def write_npy(case: CaseOutput) -> list[Path]:
        """The label map as a bare NumPy array."""

        def save(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                np.save(handle, case.mask)

        return [atomic_write(case.target, save)]

    yield
    MASK_WRITERS.remove("npy")


def test_the_writers_module_lists_its_names_without_torch() -> None:
    loaded = loaded_modules(
        "from medgraft.data.writers import MASK_WRITERS\n"
        "assert {'nifti', 'dicom-seg', 'probabilities'} <= set(MASK_WRITERS.names())"
    )
    assert not {"torch", "monai", "nibabel", "PIL"} & loaded, sorted(loaded)


def test_a_registered_writer_is_chosen_by_output_format(
    npy_writer, random_model: Path, scans: Path, runner, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = invoke(
        runner, "predict", "--model", random_model, "-i", scans, "-o", out,
        "--output-format", "npy,nifti", "--no-tta",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written = np.load(out / "scan_mask.npy")
    assert np.array_equal(written, np.asarray(nib.load(out / "scan.nii.gz").dataobj))
    [row] = csv.DictReader((out / "summary.csv").open())
    assert row["output"] == str(out / "scan_mask.npy")  # the first writer's file
    again = invoke(
        runner, "predict", "--model", random_model, "-i", scans, "-o", out,
        "--output-format", "npy",
    )  # fmt: skip
    assert again.exit_code == 0 and "1 skipped" in again.output


def test_an_unknown_writer_is_one_line_naming_the_valid_ones(
    npy_writer, random_model: Path, scans: Path, runner, tmp_path: Path
) -> None:
    result = invoke(
        runner, "predict", "--model", random_model, "-i", scans, "-o", tmp_path / "out",
        "--output-format", "nifti,npz",
    )  # fmt: skip
    assert result.exit_code == 1
    message = str(result.exception)
    assert message == (
        "unknown mask writer --output-format 'npz'; choose from nifti, dicom-seg, both, "
        "probabilities, npy"
    )
    assert not (tmp_path / "out").exists()


def test_both_is_nifti_and_dicom_seg_and_each_writer_runs_once() -> None:
    assert [w.name for w in chosen_writers(["both"])] == ["nifti", "dicom-seg"]
    assert [w.name for w in chosen_writers(["dicom-seg", "both", "nifti"])] == [
        "dicom-seg",
        "nifti",
    ]
