"""Deep supervision (nnU-Net): the coarser decoder stages get a loss of their own too.

Each supervised stage gets a 1x1 convolution to class logits, and MONAI's
``DeepSupervisionLoss`` weighs the outputs 1, 1/2, 1/4, … against the labels resized to each
(nearest neighbour). The heads serve training only: the saved model stays the plain U-Net, so
prediction, export and every earlier checkpoint are unchanged.
"""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss
from torch import nn

from medgraft.errors import MedgraftError
from medgraft.models.unet import Segmenter


def output_channels(stage: nn.Module) -> int:
    """Channels a decoder stage puts out: those of its last convolution."""
    convolutions = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return int(convolutions[-1].out_channels)


class DeepSupervised(nn.Module):
    """The segmenter with 1x1 heads on its ``levels`` decoder stages just above the output.

    In training, ``forward`` returns ``[logits, logits at 1/2, at 1/4, …]``, finest first as
    ``DeepSupervisionLoss`` weighs them; in eval mode it returns the logits alone. Forward hooks
    read the stages' outputs, so smp's decoder runs as it is, not as a copy.
    """

    def __init__(self, segmenter: Segmenter, levels: int) -> None:
        super().__init__()
        stages = list(segmenter.unet.decoder.blocks)
        if not 0 < levels < len(stages):
            raise MedgraftError(
                f"--deep-supervision takes 1 to {len(stages) - 1} decoder stages for encoder "
                f"{segmenter.encoder_name}, not {levels}"
            )
        self.segmenter = segmenter
        supervised = stages[-1 - levels : -1]  # coarsest first: the order they run in
        self.heads = nn.ModuleList(
            nn.Conv2d(output_channels(stage), segmenter.num_classes, kernel_size=1)
            for stage in reversed(supervised)
        )
        self._stage_outputs: list[torch.Tensor] = []
        for stage in supervised:
            stage.register_forward_hook(self._keep_output)

    def _keep_output(self, stage: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        # the segmenter alone runs in eval mode during validation: keep nothing then
        if stage.training:
            self._stage_outputs.append(output)

    @property
    def encoder(self) -> nn.Module:
        """The encoder, for its own learning rate (``parameter_groups``)."""
        return self.segmenter.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self._stage_outputs.clear()
        logits = self.segmenter(x)
        if not self.training:
            return logits
        stage_outputs = reversed(self._stage_outputs)
        coarser = [head(out) for head, out in zip(self.heads, stage_outputs, strict=True)]
        self._stage_outputs.clear()
        return [logits, *coarser]


class DeepSupervisionOnLabels(DeepSupervisionLoss):
    """MONAI's ``DeepSupervisionLoss`` for integer label maps: its nearest-neighbour resize
    takes float maps only, and float32 holds the label values exactly."""

    def forward(
        self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        return super().forward(input, target.float())


def deeply_supervised(loss: nn.Module) -> nn.Module:
    """``loss`` over every output of :class:`DeepSupervised`, weighted 1, 1/2, 1/4, …"""
    return DeepSupervisionOnLabels(loss, weight_mode="exp")
