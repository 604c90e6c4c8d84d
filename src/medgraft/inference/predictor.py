"""Segment one case: 2.5D stacks (volumes) or whole images (2D), streamed in bounded batches.

Several models (e.g. the folds of a cross-validation) are ensembled by averaging their softmax
probabilities; mirroring test-time augmentation averages over the in-plane flips the model was
trained with, the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from monai.transforms import DivisiblePad, Resize
from monai.utils import convert_to_tensor

from medgraft.config.schema import PredictOptions
from medgraft.data.slicing import move_slice_axis_last, stacks_to_volume, volume_to_stacks
from medgraft.errors import MedgraftError
from medgraft.models.checkpoint import (
    INPUTS_THAT_MUST_AGREE,
    Checkpoint,
    ModelInputs,
    load_model,
)
from medgraft.models.unet import Segmenter


def mirrorings(axes: list[int]) -> list[tuple[int, ...]]:
    """Every combination of the mirror ``axes``, identity first: the TTA variants.

    Only axes the model was trained to be mirrored on are allowed: a flip a model never saw
    (e.g. anterior/posterior on hippocampus labels) would average in wrong predictions.
    """
    return [
        tuple(a for a, keep in zip(axes, mask, strict=True) if keep)
        for mask in itertools.product([False, True], repeat=len(axes))
    ]


@dataclass
class Segmentation:
    """Argmax labels of a case and, on request, its class probabilities (float16)."""

    labels: torch.Tensor
    probabilities: torch.Tensor | None = None
    slices: int = 1
    """2D slices the models segmented (over every view of a multi-view ensemble)."""


class Predictor:
    """Turns a case-transformed image (values in [0, 1]) into labels and probabilities.

    ``inputs`` says how the models take their input: volumetric or 2D, k slices, 2D size;
    ``slice_axes`` each 2.5D model's view when they differ (default: ``inputs.slice_axis``).
    """

    def __init__(
        self,
        models: Segmenter | list[Segmenter],
        inputs: ModelInputs,
        *,
        device: torch.device,
        batch_size: int = PredictOptions.batch_size,
        amp_dtype: torch.dtype | None = None,
        tta: bool = False,
        slice_axes: list[int] | None = None,
    ) -> None:
        self.models = [
            m.to(device).eval() for m in (models if isinstance(models, list) else [models])
        ]
        self.inputs = inputs
        self.slice_axes = slice_axes or [inputs.slice_axis] * len(self.models)
        """Each model's slice axis (2.5D): an ensemble may mix views."""
        self.device = device
        self.batch_size = batch_size
        self.amp_dtype = amp_dtype
        self.flips = mirrorings(inputs.mirror_axes if tta else [])
        stride = max(m.output_stride for m in self.models)
        self.pad = DivisiblePad(k=(1, stride, stride), method="end")

    @classmethod
    def from_checkpoints(cls, checkpoints: list[Checkpoint], **kwargs) -> Predictor:
        """An ensemble of checkpoints that must agree on input handling and classes."""
        reference = checkpoints[0]
        for checkpoint in checkpoints:
            for key in INPUTS_THAT_MUST_AGREE:
                if getattr(checkpoint.inputs, key) != getattr(reference.inputs, key):
                    raise MedgraftError(f"ensembled models disagree on '{key}'")
            if checkpoint.architecture.classes != reference.architecture.classes:
                raise MedgraftError("ensembled models predict different numbers of classes")
        models = [load_model(c) for c in checkpoints]
        axes = [c.inputs.slice_axis for c in checkpoints]
        return cls(models, reference.inputs, slice_axes=axes, **kwargs)

    @property
    def num_classes(self) -> int:
        return self.models[0].num_classes

    @torch.no_grad()
    def segment(self, image: torch.Tensor, keep_probabilities: bool = False) -> Segmentation:
        """(C, H, W, D) volume or (C, H, W) image → labels of the spatial shape (uint8)."""
        for model in self.models:
            model.eval()  # the training loop shares its model: BatchNorm must use running stats
        # plain tensor: MONAI metadata carried through every layer only costs time
        image = convert_to_tensor(image, dtype=torch.float32, track_meta=False)
        if self.inputs.volumetric:
            return self._segment_volume(image, keep_probabilities)
        size = self.inputs.image_size
        spatial = tuple(image.shape[1:])
        if size:
            image = Resize((size, size), mode="bilinear")(image)
        probs = self._probabilities(image[None])[0]
        if size:
            probs = convert_to_tensor(Resize(spatial, mode="bilinear")(probs), track_meta=False)
        return Segmentation(
            probs.argmax(0).to(torch.uint8), probs.half() if keep_probabilities else None
        )

    def _segment_volume(self, volume: torch.Tensor, keep_probabilities: bool) -> Segmentation:
        """Stream stacks ``batch_size`` at a time along the models' slice axis: memory is
        O(batch), not O(volume). Models of several views (axial, coronal, sagittal) average
        their probabilities over the whole volume, which holds them all (O(classes x volume),
        as a 3D ensemble would)."""
        channels = max(len(self.inputs.channels), 1)
        if volume.ndim != 4 or volume.shape[0] != channels:
            raise MedgraftError(
                f"expected a {channels}-channel 3D volume, got {tuple(volume.shape)}"
            )
        spatial = volume.shape[1:]
        views: dict[int, list[Segmenter]] = {}
        for model, axis in zip(self.models, self.slice_axes, strict=True):
            views.setdefault(axis, []).append(model)
        slices = sum(spatial[axis] for axis in views)
        if len(views) > 1:
            total = torch.zeros((self.num_classes, *spatial))
            for axis, models in views.items():
                for start, stop, probs in self._stream(volume, axis, models):
                    move_slice_axis_last(total, axis)[..., start:stop] += probs * len(models)
            total /= len(self.models)
            probabilities = total.half() if keep_probabilities else None
            return Segmentation(total.argmax(0).to(torch.uint8), probabilities, slices)
        [(axis, models)] = views.items()
        labels = torch.empty(spatial, dtype=torch.uint8)
        probabilities = (
            torch.empty((self.num_classes, *spatial), dtype=torch.float16)
            if keep_probabilities
            else None
        )
        for start, stop, probs in self._stream(volume, axis, models):
            move_slice_axis_last(labels[None], axis)[0, ..., start:stop] = probs.argmax(0)
            if probabilities is not None:
                move_slice_axis_last(probabilities, axis)[..., start:stop] = probs.half()
        return Segmentation(labels, probabilities, slices)

    def _stream(
        self, volume: torch.Tensor, axis: int, models: list[Segmenter]
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, probabilities (C, ·, ·, stop - start))`` for each batch of slices
        along spatial ``axis``, in the volume's orientation with that axis last."""
        volume = move_slice_axis_last(volume, axis)
        depth = volume.shape[-1]
        for start in range(0, depth, self.batch_size):
            stop = min(start + self.batch_size, depth)
            stacks = volume_to_stacks(volume, self.inputs.slices, start, stop)
            yield start, stop, stacks_to_volume(self._probabilities(stacks, models))

    def _probabilities(
        self, batch: torch.Tensor, models: list[Segmenter] | None = None
    ) -> torch.Tensor:
        """Mean softmax over ``models`` (all by default) and mirrorings of ``batch``
        (n, C·k, H, W), on the CPU."""
        models = self.models if models is None else models
        height, width = batch.shape[-2:]
        padded = convert_to_tensor(self.pad(batch), track_meta=False).to(self.device)
        total = None
        for model in models:
            for axes in self.flips:
                inputs = padded.flip(axes) if axes else padded
                with torch.autocast(
                    self.device.type,
                    dtype=self.amp_dtype or torch.float32,
                    enabled=self.amp_dtype is not None,
                ):
                    logits = model(inputs)
                probs = torch.softmax(logits.float(), dim=1)
                probs = probs.flip(axes) if axes else probs
                total = probs if total is None else total + probs
        total = total / (len(models) * len(self.flips))
        return total[..., :height, :width].cpu()
