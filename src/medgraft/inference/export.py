"""Export a trained model to TorchScript or ONNX, so it runs without medgraft installed."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import torch

from medgraft import __version__
from medgraft.config.schema import ExportOptions
from medgraft.errors import MedgraftError
from medgraft.files import atomic_write, atomic_write_text
from medgraft.models.checkpoint import (
    Checkpoint,
    load_finished_checkpoint,
    load_model,
    resolve_checkpoint_path,
)
from medgraft.models.unet import Segmenter

FORMATS = ("torchscript", "onnx")
TRACE_SIZE = 64  # any multiple of the encoder's output stride traces the same graph
TRACE_SIZE_3D = 32  # a multiple of a 3D model's stride (16), and a quick trace
# 17 rather than the exporter's newest: older ONNX runtimes (TensorRT, mobile) still load it
ONNX_OPSET = 17
SPATIAL_AXES = {2: ["height", "width"], 3: ["x", "y", "z"]}
"""The names of the dynamic spatial axes, by the model's dimensions (3D: array axes after
reorientation, as the sidecar's preprocessing says)."""


def export_model(
    model: str | Path, fmt: str, output: Path, checkpoint: str = ExportOptions.checkpoint
) -> Path:
    """Export the checkpoint ``model`` as ``fmt`` to ``output``; a run folder means the one
    ``checkpoint`` names in it (``last``, ``best`` or a file inside it).

    Also writes ``<output>.json`` describing inputs, outputs and labels, since the exported file
    alone does not say how to prepare an image or read the logits. Both files are written under
    temporary names and renamed, and existing files are never overwritten.
    """
    if fmt not in FORMATS:
        raise MedgraftError(f"unknown export format '{fmt}' (choose from {', '.join(FORMATS)})")
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise MedgraftError("ONNX export needs the onnx package: pip install 'medgraft[export]'")
    output = Path(output)
    sidecar = output.with_name(f"{output.name}.json")
    for path in (output, sidecar):
        if path.exists():
            raise MedgraftError(f"{path}: already exists, not overwriting")
    source = resolve_checkpoint_path(model, checkpoint)
    loaded = load_finished_checkpoint(source)
    segmenter = load_model(loaded)
    dims = loaded.architecture.dims  # 3D models take a 5D input
    spatial = (TRACE_SIZE,) * 2 if dims == 2 else (TRACE_SIZE_3D,) * 3
    example = torch.rand(1, loaded.architecture.in_channels, *spatial)
    info = _sidecar(loaded, segmenter, fmt, source)
    output.parent.mkdir(parents=True, exist_ok=True)
    # the model first: a sidecar never describes a file that is not there
    writer = _export_torchscript if fmt == "torchscript" else _export_onnx
    atomic_write(output, lambda tmp: writer(segmenter, example, tmp))
    atomic_write_text(sidecar, json.dumps(info, indent=2) + "\n")
    return output


def _export_torchscript(model: Segmenter, example: torch.Tensor, path: Path) -> None:
    """Trace rather than script: smp/timm modules are not scriptable, and the traced graph keeps
    batch and H/W dynamic (TF "SAME" padding is the same for every multiple of 32)."""
    with warnings.catch_warnings(), torch.no_grad():
        # torch marks torch.jit deprecated; it is still what a "TorchScript file" means
        warnings.filterwarnings("ignore", r"`torch\.jit\.", FutureWarning)
        torch.jit.trace(model, example).save(str(path))


def _export_onnx(model: Segmenter, example: torch.Tensor, path: Path) -> None:
    """Use the TorchScript-based exporter (``dynamo=False``): it exports a dynamic batch and
    dynamic H/W in about a second, whereas the torch.export one takes minutes on the symbolic
    shapes of TF "SAME" padding when H/W are dynamic."""
    axes = dict(enumerate(["batch", "channels", *SPATIAL_AXES[example.ndim - 2]]))
    del axes[1]
    with warnings.catch_warnings(), torch.no_grad():
        # the whole TorchScript-based exporter is deprecated, so its internals warn too
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
        )


def _sidecar(checkpoint: Checkpoint, model: Segmenter, fmt: str, source: Path) -> dict:
    """What a user of the exported file needs to feed it and read its output."""
    arch, inputs = checkpoint.architecture, checkpoint.inputs
    prep = inputs.preprocessing
    spatial = SPATIAL_AXES[arch.dims]
    info = {
        "format": fmt,
        "medgraft_version": __version__,
        "source_checkpoint": str(source),
        "encoder": arch.encoder,
        "input": {
            "shape": ["batch", arch.in_channels, *spatial],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "normalization_inside": True,
            ("height_width" if arch.dims == 2 else "xyz") + "_multiple_of": model.output_stride,
        },
        "output": {
            "shape": ["batch", arch.classes, *spatial],
            "note": "raw logits: softmax over axis 1 gives class probabilities",
        },
        "in_channels": arch.in_channels,
        "classes": arch.classes,
        "labels": inputs.labels,
        "slices": inputs.slices,
        "slice_axis": inputs.slice_axis,  # spatial array axis after reorientation
        "volumetric": inputs.volumetric,
        "dims": arch.dims,
        "patch": inputs.patch,
        "image_size": inputs.image_size,
        "modality": inputs.modality,
        "preprocessing": {
            "orientation": prep.orientation,
            "spacing": list(prep.spacing) if prep.spacing else None,
            "intensity": prep.intensity,
            "window": list(prep.window) if prep.window else None,
        },
    }
    if fmt == "onnx":  # TorchScript files carry no input/output names
        info["input"]["name"], info["output"]["name"] = "image", "logits"
        info["opset"] = ONNX_OPSET
    return info
