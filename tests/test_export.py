"""Exported TorchScript and ONNX models must give the checkpoint's logits, at any batch and H/W."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from medgraft.data.transforms import Preprocessing
from medgraft.errors import MedgraftError
from medgraft.inference.export import export_model
from medgraft.models.checkpoint import Checkpoint, ModelInputs, save_checkpoint
from medgraft.models.registry import get_encoder
from medgraft.models.unet import Segmenter, architecture, build_segmenter

LABELS = {"0": "background", "1": "a", "2": "b"}
# a batch size and H/W other than the 1x3x64x64 used for tracing
BATCH = torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Segmenter]:
    """A run folder holding a randomly initialised best.pt, and the model it was saved from."""
    torch.manual_seed(0)
    spec = get_encoder("tu-tf_efficientnet_lite0")
    arch = architecture(spec, 3, 3)
    model = build_segmenter(arch, spec).eval()
    run = tmp_path_factory.mktemp("export") / "run"
    run.mkdir()
    inputs = ModelInputs(
        preprocessing=Preprocessing(volumetric=True), slices=3, labels=LABELS, modality="MRI"
    )
    checkpoint = Checkpoint(arch, inputs, model.state_dict(), epoch=1, val_dice=0.5)
    save_checkpoint(checkpoint, run / "best.pt")
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


def test_onnx_matches_pytorch(trained, expected, tmp_path: Path) -> None:
    out = export_model(trained[0] / "best.pt", "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": BATCH.numpy()})
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert json.loads((tmp_path / "model.onnx.json").read_text())["format"] == "onnx"
    assert not list(tmp_path.glob(".*.tmp"))


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
