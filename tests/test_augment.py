"""2D augmentation: image and mask move together, labels survive, seeding is reproducible."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose
from monai.utils import set_determinism

from medgraft.config.loading import options_from_mapping
from medgraft.config.schema import AugmentOptions
from medgraft.data.augment import Augment2Dd
from medgraft.errors import MedgraftError

GEOMETRY_ONLY = {"intensity": False, "noise": False}


def with_flips(**options) -> AugmentOptions:
    """Augmentation as for 2D images, whose flips default to on."""
    return AugmentOptions(**options).for_data(volumetric=False)


def square_sample(k: int = 3, size: int = 48) -> dict:
    """An off-centre square as label 1, copied into image channel 0 so both can be compared."""
    label = torch.zeros(1, size, size, dtype=torch.int64)
    label[0, 6:18, 28:42] = 1
    image = torch.rand(k, size, size, generator=torch.Generator().manual_seed(0)) * 0.4
    image[0] = label[0].float()
    return {"image": image, "label": label}


def mismatch(out: dict) -> torch.Tensor:
    return (out["image"][0] > 0.5) != (out["label"][0] == 1)


def mask_edge(label: torch.Tensor) -> torch.Tensor:
    """(H, W) edge of a (1, H, W) label map: pixels with both labels in their 3x3 neighbourhood.

    That is where a bilinear image and a nearest-neighbour mask may legitimately disagree.
    """
    m = label.float()
    return (F.max_pool2d(m, 3, 1, 1) != -F.max_pool2d(-m, 3, 1, 1))[0]


def test_flips_move_image_and_mask_together_and_fire_independently() -> None:
    sample = square_sample()
    t = Augment2Dd(["image", "label"], with_flips(affine=False, **GEOMETRY_ONLY))
    t.set_random_state(seed=0)
    label = sample["label"]
    flipped = {
        (): label,
        (-1,): label.flip(-1),
        (-2,): label.flip(-2),
        (-2, -1): label.flip(-2, -1),
    }
    seen = set()
    for _ in range(60):
        out = t(sample)
        assert not mismatch(out).any()
        seen |= {dims for dims, ref in flipped.items() if torch.equal(out["label"], ref)}
    assert seen == set(flipped)  # each flip fires on its own, not in lockstep with the other


@pytest.mark.parametrize("family", [{"affine": True}, {"affine": False, "elastic": True}])
def test_warps_move_image_and_mask_together(family: dict) -> None:
    """Bilinear image vs nearest mask may differ only on the square's edge, never beyond."""
    sample = square_sample()
    config = with_flips(strength=2.0, flips=False, **family, **GEOMETRY_ONLY)
    t = Augment2Dd(["image", "label"], config)
    t.set_random_state(seed=1)
    moved = 0
    for _ in range(40):
        out = t(sample)
        assert not (mismatch(out) & ~mask_edge(out["label"])).any()
        moved += not torch.equal(out["label"], sample["label"])
    assert moved >= 10


@pytest.mark.parametrize("k", [3, 5])
def test_labels_dtypes_and_shapes_are_kept(k: int) -> None:
    sample = square_sample(k)
    sample["label"][0, 30:40, 5:15] = 2
    sample["label"] += 1  # no background 0: the border fill must not invent one
    sample = {key: MetaTensor(value) for key, value in sample.items()}
    t = Augment2Dd(["image", "label"], with_flips(strength=2.0, elastic=True))
    t.set_random_state(seed=2)
    for _ in range(20):
        out = t(sample)
        for key in ("image", "label"):
            assert type(out[key]) is torch.Tensor  # samples carry no MONAI metadata onward
            assert out[key].dtype == sample[key].dtype
            assert out[key].shape == sample[key].shape
        assert set(out["label"].unique().tolist()) <= {1, 2, 3}
        assert out["image"].min() >= 0.0 and out["image"].max() <= 1.0


def draws(seed: int, n: int = 4) -> list[dict]:
    t = Augment2Dd(["image", "label"], with_flips(elastic=True))
    t.set_random_state(seed=seed)
    return [t(square_sample()) for _ in range(n)]


def same(a: list[dict], b: list[dict]) -> bool:
    keys = ("image", "label")
    return all(torch.equal(x[key], y[key]) for x, y in zip(a, b, strict=True) for key in keys)


def test_same_seed_same_output_different_seed_differs() -> None:
    assert same(draws(3), draws(3))
    assert not same(draws(3), draws(4))


def test_set_determinism_with_monai_dataloader_is_reproducible() -> None:
    """MONAI's DataLoader seeds the transform from torch, which ``set_determinism`` fixes."""

    def batch() -> dict:
        set_determinism(seed=0)
        transform = Compose([Augment2Dd(["image", "label"], with_flips())])
        return next(iter(DataLoader(Dataset([square_sample()] * 6, transform), batch_size=6)))

    try:
        first, second = batch(), batch()
    finally:
        set_determinism(seed=None)
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["label"], second["label"])


@pytest.mark.parametrize(
    "config",
    [
        with_flips(strength=0.0),
        with_flips(enabled=False),
        with_flips(flips=False, affine=False, intensity=False, noise=False),
    ],
)
def test_off_returns_input_unchanged(config: AugmentOptions) -> None:
    sample = square_sample()
    t = Augment2Dd(["image", "label"], config)
    for _ in range(3):
        out = t(sample)
        assert torch.equal(out["image"], sample["image"])
        assert torch.equal(out["label"], sample["label"])


def test_config_from_dict(tmp_path) -> None:
    section = {"strength": 0.5, "flips": False}
    loaded = options_from_mapping(section, tmp_path, config_class=AugmentOptions)
    assert AugmentOptions(**loaded) == AugmentOptions(strength=0.5, flips=False)
    with pytest.raises(MedgraftError, match="flip"):
        options_from_mapping({"flip": False}, tmp_path, config_class=AugmentOptions)
    with pytest.raises(MedgraftError, match="strength"):
        AugmentOptions(strength=-1)


def test_flips_default_on_for_2d_images_and_off_for_volumes() -> None:
    assert AugmentOptions().for_data(volumetric=False).flips is True
    assert AugmentOptions().for_data(volumetric=True).flips is False
    assert AugmentOptions(flips=True).for_data(volumetric=True).flips is True
