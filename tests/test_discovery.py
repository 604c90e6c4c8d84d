import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_nifti

from medgraft.data.discovery import case_id_of, discover_dataset
from medgraft.errors import MedgraftError


def test_msd_layout_lists_exactly_the_manifest(demo_dir: Path):
    spec = discover_dataset(demo_dir)
    assert spec.layout == "msd"
    assert len(spec.training) == 24 and len(spec.test) == 4
    assert spec.labels == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert spec.modality == "MRI" and spec.is_volumetric
    first = spec.training[0]
    assert first.case_id == "hippocampus_001" and first.roi is None
    assert Path(first.label).parent.name == "labelsTr"
    assert set(first.files()) == {"image", "label"}  # no roi key: MONAI would look for one
    assert spec.test[0].label is None and set(spec.test[0].files()) == {"image"}


def test_nnunet_raw_layout(tmp_path: Path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for case in ("liver_1", "liver_2"):
        write_nifti(tmp_path / "imagesTr" / f"{case}_0000.nii.gz", np.zeros((4, 4, 4), np.float32))
        write_nifti(tmp_path / "labelsTr" / f"{case}.nii.gz", np.zeros((4, 4, 4), np.uint8))
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "liver": 1},
                "numTraining": 2,
                "file_ending": ".nii.gz",
            }
        )
    )
    spec = discover_dataset(tmp_path)
    assert spec.layout == "nnunet"
    assert [r.case_id for r in spec.training] == ["liver_1", "liver_2"]
    assert spec.training[0].label.endswith("labelsTr/liver_1.nii.gz")
    assert spec.labels == {0: "background", 1: "liver"} and spec.modality == "CT"


def test_folder_pair_layout_2d(tiny_2d: Path):
    spec = discover_dataset(tiny_2d)
    assert spec.layout == "folder" and not spec.is_volumetric
    assert len(spec.training) == 6
    assert all(Path(r.label).parent.name == "masks" for r in spec.training)


def test_case_ids():
    assert case_id_of("/x/la_003_0000.nii.gz") == "la_003"
    assert case_id_of("polyp.7.jpg") == "polyp.7"
    assert case_id_of("brain.nii") == "brain"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "no dataset layout recognised"),
        (lambda root: (root / "dataset.json").write_text("{not json"), "not valid JSON"),
        (
            lambda root: (root / "dataset.json").write_text(
                json.dumps(
                    {"training": [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}]}
                )
            ),
            "a.nii.gz: listed in",
        ),
        (
            lambda root: (root / "dataset.json").write_text(
                json.dumps({"training": [{"image": "x"}]})
            ),
            "needs 'image' and 'label'",
        ),
    ],
)
def test_bad_datasets_raise_clear_errors(tmp_path: Path, setup, message: str):
    setup(tmp_path)
    with pytest.raises(MedgraftError, match=message):
        discover_dataset(tmp_path)


def test_missing_folder(tmp_path: Path):
    with pytest.raises(MedgraftError, match="dataset folder not found"):
        discover_dataset(tmp_path / "nope")
