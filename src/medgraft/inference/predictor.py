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
from monai.inferers import sliding_window_inference
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

VOLUME = "3d"
"""The "view" of 3D models in an ensemble: the whole volume, by sliding windows."""
SLICES_PER_WINDOW = 16
"""``--batch-size`` counts 2D slices; a 3D window takes the memory of about this many (a
48 x 64 x 48 patch holds 48 slices of a smaller plane), so batches of windows stay bounded."""
WINDOW_OVERLAP = 0.5
"""Sliding windows overlap by half a patch, as nnU-Net's default step of 0.5."""


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
        default_axis = VOLUME if inputs.dims == 3 else inputs.slice_axis
        self.slice_axes = slice_axes or [default_axis] * len(self.models)
        """Each model's slice axis (2.5D), or :data:`VOLUME` (3D): an ensemble may mix them."""
        self.device = device
        self.batch_size = batch_size
        self.amp_dtype = amp_dtype
        self.flips = mirrorings(inputs.mirror_axes if tta else [])
        stride = max(m.output_stride for m in self.models)
        self.pad = DivisiblePad(k=(1, stride, stride), method="end")

    @classmethod
    def from_checkpoints(cls, checkpoints: list[Checkpoint], **kwargs) -> Predictor:
        """An ensemble of checkpoints that must agree on input handling and classes; 2.5D
        models on their slices, and 3D models beside 2.5D ones on the grid they see."""
        reference = checkpoints[0]
        for checkpoint in checkpoints:
            for key in INPUTS_THAT_MUST_AGREE:
                if getattr(checkpoint.inputs, key) != getattr(reference.inputs, key):
                    raise MedgraftError(f"ensembled models disagree on '{key}'")
            if checkpoint.architecture.classes != reference.architecture.classes:
                raise MedgraftError("ensembled models predict different numbers of classes")
        slice_models = [c.inputs for c in checkpoints if c.inputs.dims == 2]
        if len({inputs.slices for inputs in slice_models}) > 1:
            raise MedgraftError("ensembled models disagree on 'slices'")
        if len({c.inputs.dims for c in checkpoints}) > 1:
            for key in ("orientation", "spacing"):
                if len({getattr(c.inputs.preprocessing, key) for c in checkpoints}) > 1:
                    raise MedgraftError(
                        f"ensembled 3D and 2.5D models disagree on '{key}': their grids differ"
                    )
        models = [load_model(c) for c in checkpoints]
        axes = [VOLUME if c.inputs.dims == 3 else c.inputs.slice_axis for c in checkpoints]
        inputs = next((c.inputs for c in checkpoints if c.inputs.dims == 3), reference.inputs)
        return cls(models, inputs, slice_axes=axes, **kwargs)

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
        O(batch), not O(volume). Models of several views (axial, coronal, sagittal), or 3D
        models, average their probabilities over the whole volume, which holds them all
        (O(classes x volume), as sliding windows need anyway)."""
        channels = max(len(self.inputs.channels), 1)
        if volume.ndim != 4 or volume.shape[0] != channels:
            raise MedgraftError(
                f"expected a {channels}-channel 3D volume, got {tuple(volume.shape)}"
            )
        spatial = volume.shape[1:]
        views: dict[int | str, list[Segmenter]] = {}
        for model, axis in zip(self.models, self.slice_axes, strict=True):
            views.setdefault(axis, []).append(model)
        slices = sum(spatial[axis] for axis in views if axis != VOLUME)
        if len(views) > 1 or VOLUME in views:
            total = torch.zeros((self.num_classes, *spatial))
            for axis, models in views.items():
                if axis == VOLUME:
                    total += self._window_probabilities(volume, models) * len(models)
                    continue
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

    def _autocast(self) -> torch.autocast:
        """Mixed precision as asked (``amp_dtype``), or plain float32."""
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    def _window_probabilities(self, volume: torch.Tensor, models: list[Segmenter]) -> torch.Tensor:
        """Mean softmax of 3D ``models`` (and mirrorings) over the (C, X, Y, Z) ``volume``, by
        MONAI's sliding windows of the training patch with Gaussian blending. The volume and
        the blended output stay on the CPU; only windows go to the device. A volume smaller
        than the patch is padded by MONAI and cropped back."""
        batch = volume[None]
        total = torch.zeros((1, self.num_classes, *volume.shape[1:]))
        for model in models:
            for axes in self.flips:
                inputs = batch.flip(axes) if axes else batch
                with self._autocast():
                    logits = sliding_window_inference(
                        inputs,
                        roi_size=self.inputs.patch,
                        sw_batch_size=max(1, self.batch_size // SLICES_PER_WINDOW),
                        predictor=model,
                        overlap=WINDOW_OVERLAP,
                        mode="gaussian",
                        sw_device=self.device,
                        device=torch.device("cpu"),
                    )
                probs = torch.softmax(convert_to_tensor(logits, track_meta=False).float(), dim=1)
                total += probs.flip(axes) if axes else probs
        return total[0] / (len(models) * len(self.flips))

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
                with self._autocast():
                    logits = model(inputs)
                probs = torch.softmax(logits.float(), dim=1)
                probs = probs.flip(axes) if axes else probs
                total = probs if total is None else total + probs
        total = total / (len(models) * len(self.flips))
        return total[..., :height, :width].cpu()
