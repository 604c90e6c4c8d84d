"""Exported TorchScript and ONNX models must give the checkpoint's logits, at any batch and H/W."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import invoke

from medgraft.data.transforms import Preprocessing
from medgraft.errors import MedgraftError
from medgraft.inference.export import export_model
from medgraft.models.checkpoint import Checkpoint, ModelInputs, save_checkpoint
from medgraft.models.registry import get_encoder
from medgraft.models.unet import Segmenter, architecture, build_segmenter

LABELS = {"0": "background", "1": "a", "2": "b"}
SPEC = get_encoder("tu-tf_efficientnet_lite0")
# a batch size and H/W other than the 1x3x64x64 used for tracing
BATCH = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(1))


HEAD_BIAS = "unet.segmentation_head.0.bias"
BEST_SHIFT = torch.tensor([0.0, 1.0, -1.0])
"""What ``best.pt``'s head bias adds to ``last.pt``'s: the two export different logits."""


def random_checkpoint(model: Segmenter, **extra) -> Checkpoint:
    inputs = ModelInputs(
        preprocessing=Preprocessing(volumetric=True), slices=3, labels=LABELS, modality="MRI"
    )
    return Checkpoint(architecture(SPEC, 3, 3), inputs, model.state_dict(), **extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Segmenter]:
    """A run folder whose last.pt holds a randomly initialised model, returned with it, and
    whose best.pt the same model with ``BEST_SHIFT`` added to its head's bias."""
    torch.manual_seed(0)
    model = build_segmenter(architecture(SPEC, 3, 3), SPEC).eval()
    run = tmp_path_factory.mktemp("export") / "run"
    run.mkdir()
    save_checkpoint(random_checkpoint(model, epoch=2, val_dice=0.4), run / "last.pt")
    best = random_checkpoint(model, epoch=1, val_dice=0.5)
    best.model_state = {**best.model_state, HEAD_BIAS: best.model_state[HEAD_BIAS] + BEST_SHIFT}
    save_checkpoint(best, run / "best.pt")
    return run, model


@pytest.fixture(scope="module")
def expected(trained) -> torch.Tensor:
    with torch.no_grad():
        return trained[1](BATCH)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_matches_pytorch(trained, expected, tmp_path: Path) -> None:
    out = export_model(trained[0], "torchscript", tmp_path / "model.ts")
    with torch.no_grad():
        logits = torch.jit.load(str(out))(BATCH)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    info = json.loads((tmp_path / "model.ts.json").read_text())
    assert info["in_channels"] == 3 and info["labels"] == LABELS and info["slices"] == 3
    assert info["volumetric"] is True and info["image_size"] is None
    assert info["input"]["range"] == [0.0, 1.0] and info["input"]["normalization_inside"]


def onnx_logits(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": BATCH.numpy()})[0]


def test_onnx_matches_pytorch(trained, expected, tmp_path: Path) -> None:
    out = export_model(trained[0], "onnx", tmp_path / "model.onnx")
    np.testing.assert_allclose(onnx_logits(out), expected.numpy(), atol=1e-4, rtol=1e-4)
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["format"] == "onnx"
    assert sidecar["source_checkpoint"] == str(trained[0] / "last.pt")  # a run's final model
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_takes_the_checkpoint_asked_for(trained, expected, runner, tmp_path: Path) -> None:
    out = tmp_path / "best.onnx"
    result = invoke(
        runner, "export", "--model", trained[0], "--format", "onnx", "--output", out,
        "--checkpoint", "best",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    wanted = expected + BEST_SHIFT[None, :, None, None]
    np.testing.assert_allclose(onnx_logits(out), wanted.numpy(), atol=1e-4, rtol=1e-4)
    sidecar = json.loads((tmp_path / "best.onnx.json").read_text())
    assert sidecar["source_checkpoint"] == str(trained[0] / "best.pt")


def test_a_run_interrupted_mid_epoch_is_not_exported(trained, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(random_checkpoint(trained[1], interrupted_in_epoch=2), run / "last.pt")
    with pytest.raises(MedgraftError, match=r"interrupted during epoch 2.*--resume"):
        export_model(run, "onnx", tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_refuses_to_overwrite(trained, tmp_path: Path) -> None:
    existing = tmp_path / "model.onnx"
    existing.write_text("keep me")
    with pytest.raises(MedgraftError, match="already exists"):
        export_model(trained[0], "onnx", existing)
    assert existing.read_text() == "keep me"


def test_unknown_format(trained, tmp_path: Path) -> None:
    with pytest.raises(MedgraftError, match="unknown export format 'tflite'"):
        export_model(trained[0], "tflite", tmp_path / "model.tflite")
    assert not list(tmp_path.iterdir())


def test_onnx_missing_names_the_extra(trained, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # find_spec then reports it missing
    with pytest.raises(MedgraftError, match=r"medgraft\[export\]"):
        export_model(trained[0], "onnx", tmp_path / "model.onnx")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_3d_model_exports_with_a_5d_input_of_any_size(tmp_path: Path) -> None:
    """ACS's 2D convolutions on planes and MONAI's 3D decoder, traced at 64^3, must give the
    checkpoint's logits on another batch and size (multiples of the stride, 16)."""
    torch.manual_seed(0)
    arch = architecture(SPEC, 1, 3, conversion="acs")
    model = build_segmenter(arch, SPEC).eval()
    inputs = ModelInputs(
        preprocessing=Preprocessing(volumetric=True), slices=1, labels=LABELS, dims=3,
        patch=[32, 48, 16],
    )  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(Checkpoint(arch, inputs, model.state_dict(), epoch=1), run / "last.pt")
    volume = torch.rand(2, 1, 32, 48, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(volume)
    scripted = export_model(run, "torchscript", tmp_path / "model.ts")
    with torch.no_grad():
        torch.testing.assert_close(
            torch.jit.load(str(scripted))(volume), expected, atol=1e-4, rtol=1e-4
        )
    onnx = export_model(run, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    [logits] = session.run(["logits"], {"image": volume.numpy()})
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=1e-4)
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["dims"] == 3 and info["input"]["shape"] == ["batch", 1, "x", "y", "z"]
    assert info["patch"] == [32, 48, 16] and info["input"]["xyz_multiple_of"] == 16
