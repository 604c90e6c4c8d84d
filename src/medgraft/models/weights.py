"""Where an encoder's pretrained weights come from, resolved without silent fallbacks.

``--weights`` takes ``none`` (random init, the scratch baseline), a file path, or a source name
such as ``imagenet``. A source name is resolved from a Python package that ships the file
(offline) and otherwise through smp's own download, unless ``offline`` is set. If nothing is
found the error lists every place that was tried; medgraft never falls back to random weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from medgraft.errors import MedgraftError, first_line
from medgraft.models.registry import EncoderSpec, PretrainedSource

HEAD_KEY_PREFIXES = ("conv_head.", "bn2.", "classifier.")
"""timm EfficientNet keys past the last feature stage: a U-Net encoder has no use for them."""


@dataclass
class ResolvedWeights:
    """The weights an encoder starts from and a record of where they came from."""

    origin: str
    """``random``, ``file``, ``package:<module>`` or ``download``."""
    state_dict: dict[str, torch.Tensor] | None = None
    path: str | None = None
    sha256: str | None = None
    source: str | None = None

    def record(self) -> dict[str, str | None]:
        return {
            "origin": self.origin,
            "source": self.source,
            "path": self.path,
            "sha256": self.sha256,
        }


def resolve_weights(spec: EncoderSpec, weights: str, *, offline: bool = False) -> ResolvedWeights:
    """Resolve ``weights`` (``none`` | path | source name) for ``spec``."""
    if weights == "none":
        return ResolvedWeights(origin="random")
    path = Path(weights).expanduser()
    if path.suffix in {".pth", ".pt", ".bin", ".safetensors"} or path.exists():
        return _from_file(spec, path, spec.normalization(), origin="file")
    if weights not in spec.sources:
        known = ", ".join(spec.sources) or "none"
        raise MedgraftError(
            f"encoder {spec.name} has no pretrained source '{weights}' (known: {known}); "
            "pass 'none', a known source, or a weight file path"
        )
    source = spec.sources[weights]
    tried = []
    if source.package is not None:
        shipped = packaged_weight_file(source.package)
        if shipped is not None:
            return _from_file(spec, shipped, source, origin=f"package:{source.package}")
        tried.append(f"Python package '{source.package}' (not installed)")
    if offline:
        tried.append("network download (disabled by --offline)")
        raise MedgraftError(
            f"no '{weights}' weights for {spec.name} found offline; tried: "
            + "; ".join(tried)
            + ". Pass --weights PATH to a local weight file"
        )
    return ResolvedWeights(origin="download", source=weights)


def packaged_weight_file(module: str) -> Path | None:
    """The single ``.pth`` file shipped in ``<module>/models/``, if that package is installed."""
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        return None
    files = sorted((Path(found.origin).parent / "models").glob("*.pth"))
    return files[0] if files else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _from_file(
    spec: EncoderSpec, path: Path, source: PretrainedSource, *, origin: str
) -> ResolvedWeights:
    if not path.is_file():
        raise MedgraftError(f"{path}: weight file not found")
    state_dict = load_state_dict_file(path)
    if source.key_style == "efficientnet-pytorch" or "_conv_stem.weight" in state_dict:
        if spec.timm_name is None:
            raise MedgraftError(f"{path}: EfficientNet weights need a 'tu-' timm encoder")
        state_dict = efficientnet_pytorch_to_timm(state_dict, spec.timm_name, path)
    return ResolvedWeights(
        origin=origin,
        state_dict=state_dict,
        path=str(path.resolve()),
        sha256=sha256_of(path),
        source=source.name,
    )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors only: ``weights_only=True`` refuses pickles that would run code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for bad files
        raise MedgraftError(f"{path}: cannot load weights ({first_line(exc)})") from exc
    if (
        isinstance(loaded, dict)
        and "state_dict" in loaded
        and isinstance(loaded["state_dict"], dict)
    ):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise MedgraftError(f"{path}: not a state dict of tensors")
    return dict(loaded)


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


def load_into_encoder(
    encoder: torch.nn.Module, weights: ResolvedWeights, spec: EncoderSpec
) -> None:
    """Load resolved weights into an smp encoder, requiring every encoder key to be matched."""
    if weights.state_dict is None:
        return
    target = encoder.model if spec.timm_name is not None else encoder
    expected = set(target.state_dict())
    state_dict = {k: v for k, v in weights.state_dict.items() if k in expected}
    extra = [
        k for k in weights.state_dict if k not in expected and not k.startswith(HEAD_KEY_PREFIXES)
    ]
    # smp's own encoders drop the classifier ("fc."/"classifier."/"last_linear.") the same way.
    extra = [k for k in extra if k.split(".")[0] not in {"fc", "last_linear", "head"}]
    missing = sorted(expected - set(state_dict))
    if missing or extra:
        raise MedgraftError(
            f"{weights.path}: does not fit encoder {spec.name} "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    target.load_state_dict(state_dict, strict=True)
