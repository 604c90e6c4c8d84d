"""Shared fixtures: small datasets built from the embedded demo data or generated on the fly.

Tests that train a model, launch subprocesses or torchrun are marked ``slow``: explicitly, or
here for every test that uses a fixture holding a trained model (``TRAINED_MODEL_FIXTURES``).
``pytest -m "not slow"`` runs the rest in under a minute; the default run runs everything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from slurm_cluster import SlurmCluster, missing_programs
from typer.testing import CliRunner

from medgraft.cli import app

DEMO = Path(__file__).resolve().parents[1] / "data" / "hippocampus"
TRAINED_MODEL_FIXTURES = {
    "mri_run",
    "straight_run",
    "recipe_run",
    "finished_study",
    "model_2d",
    "model_3d",
}
"""Fixtures that train a model: a test using one is slow."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINED_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def isolated_weight_caches(tmp_path_factory, monkeypatch) -> None:
    """Empty Hugging Face / torch hub caches and no weights folder, for every test.

    A machine that already holds downloaded weights (a developer's) would otherwise resolve
    them from its caches and pass tests that must work from the shipped packages alone; and
    nothing a test does may download. Tests that need a cache fill these folders themselves.
    """
    caches = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("HF_HOME", str(caches / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(caches / "hf" / "hub"))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(caches / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(caches / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MEDGRAFT_WEIGHTS_DIR", raising=False)


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str):
    """Run the CLI in-process the way ``main`` does, returning the click result."""
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture(scope="session")
def tiny_msd(tmp_path_factory) -> Path:
    """Six real hippocampus cases in MSD layout (four to train, two to validate)."""
    root = tmp_path_factory.mktemp("tiny_msd")
    manifest = json.loads((DEMO / "dataset.json").read_text())
    manifest["training"] = manifest["training"][:6]
    manifest["test"] = manifest["test"][:1]
    for entry in manifest["training"]:
        for key in ("image", "label"):
            (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(DEMO / entry[key], root / entry[key])
    (root / "imagesTs").mkdir(exist_ok=True)
    shutil.copy(DEMO / manifest["test"][0], root / manifest["test"][0])
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def disk_image(size: tuple[int, int], center: tuple[int, int], radius: int, seed: int):
    """A noisy RGB image with one bright disk, and its 0/255 mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    disk = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2
    rgb = rng.integers(0, 80, (*size, 3)).astype(np.uint8)
    rgb[disk] = rng.integers(170, 255, (int(disk.sum()), 3)).astype(np.uint8)
    return rgb, (disk * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_2d(tmp_path_factory) -> Path:
    """A plain images/ + masks/ folder of synthetic RGB PNGs with 0/255 masks, varied sizes."""
    root = tmp_path_factory.mktemp("tiny_2d")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(6):
        size = (40 + 4 * i, 52 - 2 * i)
        rgb, mask = disk_image(size, (size[0] // 2, size[1] // 2 - i), 8 + i, seed=i)
        Image.fromarray(rgb).save(root / "images" / f"case{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{i}.png")
    return root


DRIVE_SIZE = 64


@pytest.fixture(scope="session")
def drive_layout(tmp_path_factory) -> Path:
    """Six fundus-like images named as DRIVE names them; the field of view is a disc and the
    'vessels' are dark lines inside it."""
    root = tmp_path_factory.mktemp("drive") / "training"
    for folder in ("images", "1st_manual", "mask"):
        (root / folder).mkdir(parents=True)
    size = DRIVE_SIZE
    yy, xx = np.mgrid[:size, :size]
    field = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2 - 4) ** 2
    rng = np.random.default_rng(0)
    for i in range(21, 27):
        vessels = np.zeros((size, size), bool)
        for row in rng.integers(10, size - 10, size=3):
            vessels[row : row + 2, 8:-8] = True
        vessels &= field
        image = np.where(field, 180, 10).astype(np.float64) - 90 * vessels
        rgb = np.clip(image[..., None] + rng.normal(0, 5, (size, size, 3)), 0, 255)
        Image.fromarray(rgb.astype(np.uint8)).save(root / "images" / f"{i}_training.tif")
        Image.fromarray((vessels * 255).astype(np.uint8)).save(
            root / "1st_manual" / f"{i}_manual1.gif"
        )
        Image.fromarray((field * 255).astype(np.uint8)).save(
            root / "mask" / f"{i}_training_mask.gif"
        )
    return root


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


@pytest.fixture(scope="session")
def mri_run(tiny_msd: Path, runner, tmp_path_factory) -> Path:
    """One real training run (1 epoch, 4 cases) shared by the tests that need a model."""
    run = tmp_path_factory.mktemp("mri") / "run"
    result = invoke(
        runner,
        "train",
        "--recipe",
        "none",
        "--data",
        tiny_msd,
        "--output",
        run,
        "--epochs",
        "1",
        "--val-fraction",
        "0.34",
        "--batch-size",
        "32",
        "--offline",
    )
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="session")
def micro_msd(tmp_path_factory) -> Path:
    """Four real hippocampus cases cropped to 48x48x16: seconds per epoch, for loop tests."""
    root = tmp_path_factory.mktemp("micro_msd")
    manifest = json.loads((DEMO / "dataset.json").read_text())
    manifest["training"] = manifest["training"][:4]
    manifest["test"] = []
    for entry in manifest["training"]:
        for key in ("image", "label"):
            source = nib.load(str(DEMO / entry[key]))
            crop = np.asarray(source.dataobj)[8:56, 8:56, 24:40]
            (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(crop, source.affine), str(root / entry[key]))
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def run_torchrun(port: int, *args) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m medgraft ARGS`` on the CPU, as a user would launch it."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), "-m", "medgraft"]
    return subprocess.run(
        [*command, *[str(a) for a in args]],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory, request):
    """A one-node Slurm cluster with accounting for the session (``slurm_cluster.py``), its
    ``SLURM_CONF`` set for every client the tests start; stopped at the end.

    Skipped, saying why, where Slurm is not installed, but never under CI (``$CI`` set), where
    a missing cluster fails the tests: ``.ci/run`` installs it.
    """
    missing = missing_programs()
    if missing:
        reason = f"Slurm is not installed here (no {', '.join(missing)}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the Slurm tests: {reason}")
        pytest.skip(reason)
    began = time.monotonic()
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(
            f"\nSlurm test cluster (slurmdbd, slurmctld, slurmd on {cluster.node}) started in "
            f"{time.monotonic() - began:.1f} s",
            flush=True,
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster
        cluster.client("scancel", "--user", os.environ.get("USER", "root"), check=False)
    cluster.stop()
