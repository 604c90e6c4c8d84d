"""Killed and interrupted jobs, for real (subprocesses), and files that try to run code.

Each test waits for the job to reach the point it interrupts by watching the files the job
writes (``run.log``, masks), never for a fixed time.
"""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import invoke

from medgraft.errors import MedgraftError
from medgraft.models.checkpoint import load_checkpoint
from medgraft.models.registry import DEFAULT_ENCODER, get_encoder
from medgraft.models.weights import resolve_weights


def start(*args: str) -> subprocess.Popen:
    """Launch the CLI as from a terminal: SIGINT at its default even if the runner ignores it."""
    return subprocess.Popen(
        [sys.executable, "-m", "medgraft", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 600) -> None:
    """Poll ``condition`` (a file appearing or growing) until it holds; the job must live on."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def epoch_started(run: Path, epoch: int) -> bool:
    """Whether training logged that it is inside ``epoch``'s batches."""
    log = run / "run.log"
    return log.exists() and f"epoch {epoch} started" in log.read_text()


def resume_training(data: Path, run: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "medgraft",
            "train",
            "--recipe",
            "none",
            "--data",
            str(data),
            "--output",
            str(run),
            "--resume",
            *TRAIN,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def metric_rows(run: Path) -> int:
    path = run / "metrics.csv"
    return len(list(csv.DictReader(path.open()))) if path.exists() else 0


pytestmark = pytest.mark.slow

TRAIN = ["--epochs", "3", "--batch-size", "2", "--val-fraction", "0.25", "--no-augment"]


def test_sigkill_mid_training_then_resume_loses_at_most_one_epoch(micro_msd: Path, tmp_path: Path):
    run = tmp_path / "run"
    process = start("train", "--recipe", "none", "--data", micro_msd, "--output", run, *TRAIN)
    wait_for(lambda: epoch_started(run, 2), process)
    completed_at_kill = metric_rows(run)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(run.glob(".*.tmp*"))  # checkpoints are renamed into place, never partial
    state = load_checkpoint(run / "last.pt")
    assert state.epoch >= completed_at_kill - 1
    result = resume_training(micro_msd, run)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert load_checkpoint(run / "last.pt").epoch == 3
    assert f"after epoch {state.epoch}" in (run / "run.log").read_text()


def test_ctrl_c_mid_epoch_writes_last_pt(micro_msd: Path, tmp_path: Path):
    run = tmp_path / "run"
    process = start("train", "--recipe", "none", "--data", micro_msd, "--output", run, *TRAIN)
    wait_for(lambda: epoch_started(run, 2), process)  # epoch 1's checkpoint is written
    after_epoch_1 = (run / "last.pt").stat().st_mtime_ns
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted" in stderr
    state = load_checkpoint(run / "last.pt")
    assert (run / "last.pt").stat().st_mtime_ns != after_epoch_1
    assert state.interrupted_in_epoch == 2 and state.epoch == 1
    resumed = resume_training(micro_msd, run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(run / "last.pt").epoch == 3


@pytest.fixture(scope="module")
def many_scans(tiny_msd: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    for index, path in enumerate(sorted((tiny_msd / "imagesTr").glob("*.nii.gz"))):
        image = nib.load(str(path))
        for copy in range(2):
            data = np.asarray(image.dataobj)[:, :, 8 + copy * 20 : 48 + copy * 20]
            nib.save(nib.Nifti1Image(data, image.affine), str(folder / f"s{index}_{copy}.nii.gz"))
    return folder


def test_predict_killed_and_restarted_gives_the_uninterrupted_outputs(
    mri_run: Path, many_scans: Path, tmp_path: Path
):
    reference = tmp_path / "reference"
    assert invoke_predict(mri_run, many_scans, reference).returncode == 0
    out = tmp_path / "out"
    process = start("predict", "--model", mri_run, "-i", many_scans, "-o", out, "--no-tta")
    wait_for(lambda: out.exists() and bool(finished_masks(out)), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = finished_masks(out)
    assert len(done) < 12
    for name in done:  # whatever exists is complete
        nib.load(str(out / name)).get_fdata()
    assert invoke_predict(mri_run, many_scans, out).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in reference.glob("*.nii.gz"):
        np.testing.assert_array_equal(
            np.asarray(nib.load(str(path)).dataobj),
            np.asarray(nib.load(str(out / path.name)).dataobj),
        )


def finished_masks(folder: Path) -> list[str]:
    """The masks a user sees; a write cut short leaves only a hidden ``.<name>.tmp-<pid>`` file,
    which pathlib's ``*`` matches too, and which the next run removes."""
    return sorted(p.name for p in folder.glob("*.nii.gz") if not p.name.startswith("."))


def invoke_predict(model: Path, inputs: Path, output: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "medgraft",
            "predict",
            "--model",
            str(model),
            "-i",
            str(inputs),
            "-o",
            str(output),
            "--no-tta",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


class CreatesMarker:
    """Unpickling this object creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_pickles_are_refused_and_never_run(mri_run: Path, tmp_path: Path, runner):
    marker = tmp_path / "pwned"
    evil_checkpoint = tmp_path / "evil.pt"
    torch.save(
        {"format": "medgraft-checkpoint-v1", "payload": CreatesMarker(marker)}, evil_checkpoint
    )
    evil_weights = tmp_path / "evil_weights.pth"
    torch.save({"conv_stem.weight": CreatesMarker(marker)}, evil_weights)

    with pytest.raises(MedgraftError, match="cannot load checkpoint"):
        load_checkpoint(evil_checkpoint)
    with pytest.raises(MedgraftError, match="cannot load weights"):
        resolve_weights(get_encoder(DEFAULT_ENCODER), str(evil_weights))
    scans = tmp_path / "in"
    scans.mkdir()
    shutil.copy(
        next((Path(__file__).parents[1] / "data" / "hippocampus" / "imagesTs").iterdir()), scans
    )
    result = invoke(
        runner, "predict", "--model", evil_checkpoint, "-i", scans, "-o", tmp_path / "o"
    )
    assert result.exit_code != 0 and "cannot load checkpoint" in str(result.exception)
    assert not marker.exists()
    # the test can fail: an unsafe load really would run the code
    torch.load(evil_checkpoint, weights_only=False)
    assert marker.exists()
    os.remove(marker)
