"""Segment one case: 2.5D stacks (volumes) or whole images (2D), in bounded batches."""

from __future__ import annotations

import torch
from monai.transforms import DivisiblePad, Resize

from medgraft.data.slicing import stacks_to_volume, volume_to_stacks
from medgraft.data.transforms import ENCODER_STRIDE
from medgraft.models.registry import get_encoder
from medgraft.models.unet import Segmenter, build_segmenter


class Predictor:
    """Turns a case-transformed image (values in [0, 1]) into class probabilities.

    ``data`` is the checkpoint's data section: ``volumetric``, ``slices`` (k) and
    ``image_size`` (2D training size, or None).
    """

    def __init__(
        self,
        model: Segmenter,
        data: dict,
        *,
        device: torch.device,
        batch_size: int = 32,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.data = data
        self.device = device
        self.batch_size = batch_size
        self.amp_dtype = amp_dtype
        self.pad = DivisiblePad(k=(1, ENCODER_STRIDE, ENCODER_STRIDE), method="end")

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, **kwargs) -> Predictor:
        arch = checkpoint["architecture"]
        model = build_segmenter(arch, get_encoder(arch["encoder"]))
        model.load_state_dict(checkpoint["model_state"])
        return cls(model, checkpoint["data"], **kwargs)

    @property
    def num_classes(self) -> int:
        return self.model.unet.segmentation_head[0].out_channels

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """(C, H, W, D) volume or (C, H, W) image → (classes, same spatial shape) on the CPU."""
        image = torch.as_tensor(image, dtype=torch.float32)
        if self.data["volumetric"]:
            stacks = volume_to_stacks(image, self.data["slices"])
            return stacks_to_volume(self._forward(stacks))
        size = self.data.get("image_size")
        spatial = tuple(image.shape[1:])
        if size:
            image = Resize((size, size), mode="bilinear")(image)
        probs = self._forward(image[None])[0]
        if size:
            probs = torch.as_tensor(Resize(spatial, mode="bilinear")(probs))
        return probs

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Softmax outputs of ``batch`` (N, k, H, W), run ``batch_size`` samples at a time."""
        height, width = batch.shape[-2:]
        outputs = []
        for start in range(0, batch.shape[0], self.batch_size):
            chunk = self.pad(batch[start : start + self.batch_size]).to(self.device)
            with torch.autocast(
                self.device.type,
                dtype=self.amp_dtype or torch.float32,
                enabled=self.amp_dtype is not None,
            ):
                logits = self.model(torch.as_tensor(chunk))
            outputs.append(torch.softmax(logits.float(), dim=1)[..., :height, :width].cpu())
        return torch.cat(outputs)
