"""The encoders ``medgraft encoders`` lists, read from a table shipped with the package.

Listing must not import torch, smp or timm (5 s or more on a CPU machine): each encoder's
parameter count, pretrained sources, normalisation and download-cache coordinates are kept in
``encoder_catalog.json``, written by ``scripts/encoder_catalog.py`` from the installed smp and
timm (a test checks that it still matches them). Where the weights would be found offline is
decided here, by the same lookups the weight resolution uses.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

CATALOG = Path(__file__).with_name("encoder_catalog.json")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
WEIGHTS_DIR_ENV = "MEDGRAFT_WEIGHTS_DIR"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring HF_HUB_CACHE and HF_HOME as set now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = (
        os.environ.get("HF_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    )
    return Path(home) / "hub"


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch: TORCH_HOME, else the XDG cache."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"
    return Path(os.environ.get("TORCH_HOME", default)).expanduser() / "hub"


def hf_cached(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of a Hugging Face repo if it is in the local cache (never downloads)."""
    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache_dir(), revision=revision)
    return Path(found) if isinstance(found, str) else None


def cached_file(coordinates: dict) -> Path | None:
    """The weight file an earlier smp/timm download left, from its download coordinates:
    ``{"repo_id", "revision", "files"}`` on the Hugging Face hub and/or a ``url``."""
    if coordinates.get("repo_id"):
        for filename in coordinates.get("files", ["model.safetensors"]):
            found = hf_cached(coordinates["repo_id"], filename, coordinates.get("revision"))
            if found is not None:
                return found
    if coordinates.get("url"):
        checkpoint = torch_hub_dir() / "checkpoints" / Path(coordinates["url"]).name
        if checkpoint.is_file():
            return checkpoint
    return None


def packaged_weight_file(module: str) -> Path | None:
    """The single ``.pth`` file shipped in ``<module>/models/``, if that package is installed."""
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        return None
    files = sorted((Path(found.origin).parent / "models").glob("*.pth"))
    return files[0] if files else None


def weights_dir_file(folder: Path, encoder: str, source: str) -> Path | None:
    """``<encoder>.pth`` (or ``<encoder>.<source>.pth``, any weight suffix) in ``folder``."""
    names = [f"{encoder}{s}" for s in WEIGHT_SUFFIXES]
    names += [f"{encoder}.{source}{s}" for s in WEIGHT_SUFFIXES]
    return first_existing(folder / n for n in names)


def first_existing(paths: Iterable[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def offline_places(encoder: str, source: dict) -> list[Path | None]:
    """Every place the weights of ``source`` could be found offline, in resolution order."""
    places: list[Path | None] = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        places.append(weights_dir_file(Path(os.environ[WEIGHTS_DIR_ENV]), encoder, source["name"]))
    places.append(cached_file(source.get("coordinates", {})))
    if source.get("package"):
        places.append(packaged_weight_file(source["package"]))
    return places


def catalog() -> list[dict]:
    """The shipped table: one entry per encoder, in listing order."""
    return json.loads(CATALOG.read_text(encoding="utf-8"))["encoders"]


def catalog_entry(spec, params: int, coordinates_of) -> dict:
    """One encoder's row of the table, from its registry ``spec`` (an ``EncoderSpec``)."""
    default = spec.normalization()
    return {
        "name": spec.name,
        "params": params,
        "normalization": {"mean": list(default.mean), "std": list(default.std)},
        "sources": [
            {
                "name": source.name,
                "mean": list(source.mean),
                "std": list(source.std),
                "input_range": list(source.input_range),
                "package": source.package,
                "coordinates": coordinates_of(spec, source),
            }
            for source in spec.sources.values()
        ],
    }


def listed_normalization(entry: dict) -> tuple[list[float], list[float]]:
    """The mean/std a model on this encoder uses (its ImageNet source's, else its first's, else
    the default); smp keeps them in its weight repo's config.json once downloaded."""
    by_name = {s["name"]: s for s in entry["sources"]}
    source = by_name.get("imagenet") or next(iter(by_name.values()), None)
    if source is None:
        return entry["normalization"]["mean"], entry["normalization"]["std"]
    coordinates = source.get("coordinates", {})
    if coordinates.get("config_in_repo") and coordinates.get("repo_id"):
        config = hf_cached(coordinates["repo_id"], "config.json", coordinates.get("revision"))
        if config is not None:
            values = json.loads(config.read_text())
            return values.get("mean", source["mean"]), values.get("std", source["std"])
    return source["mean"], source["std"]
