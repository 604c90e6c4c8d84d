"""Deep supervision: heads on the coarser decoder stages, their loss, and runs that use them."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import invoke
from test_trainer import FAST, _train_until

from medgraft.config.schema import TrainConfig
from medgraft.errors import MedgraftError
from medgraft.models.checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
from medgraft.models.registry import get_encoder
from medgraft.models.unet import architecture, build_segmenter
from medgraft.training.deep_supervision import DeepSupervised, deeply_supervised
from medgraft.training.losses import build_loss
from medgraft.training.regions import ignore_outside
from medgraft.training.trainer import run_training as train

ENCODER = "tu-tf_efficientnet_lite0"


@pytest.fixture
def segmenter():
    spec = get_encoder(ENCODER)
    torch.manual_seed(0)
    return build_segmenter(architecture(spec, in_channels=3, classes=3), spec)


def test_training_outputs_every_supervised_scale_and_eval_the_logits_alone(segmenter):
    supervised = DeepSupervised(segmenter, levels=3)
    x = torch.rand(2, 3, 64, 64)
    supervised.train()
    outputs = supervised(x)
    assert [tuple(o.shape) for o in outputs] == [
        (2, 3, 64, 64),
        (2, 3, 32, 32),
        (2, 3, 16, 16),
        (2, 3, 8, 8),
    ]
    supervised.eval()
    with torch.no_grad():
        alone = segmenter(x)
        torch.testing.assert_close(supervised(x), alone)
        torch.testing.assert_close(outputs[0].detach(), segmenter.train()(x).detach())
    # the heads are not part of the model that is saved and predicts
    assert not any("heads" in key for key in segmenter.state_dict())


def test_each_head_reads_its_own_stage_and_gets_gradient(segmenter):
    supervised = DeepSupervised(segmenter, levels=2).train()
    outputs = supervised(torch.rand(2, 3, 64, 64))
    outputs[2].sum().backward()  # the coarsest output only
    assert supervised.heads[1].weight.grad.abs().sum() > 0
    assert supervised.heads[0].weight.grad is None  # not on the path of that output
    assert segmenter.unet.segmentation_head[0].weight.grad is None


def test_stages_outside_the_decoder_are_refused(segmenter):
    with pytest.raises(MedgraftError, match="--deep-supervision takes 1 to 4 decoder stages"):
        DeepSupervised(segmenter, levels=5)


def test_the_loss_weighs_each_scale_against_labels_resized_to_it():
    loss_fn = deeply_supervised(build_loss(TrainConfig(data="d", output="o")))
    target = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    target[..., 2:6, 2:6] = 1
    right = 30.0 * torch.nn.functional.one_hot(target[:, 0], 2).permute(0, 3, 1, 2).float()
    coarse_right = right[..., 1::2, 1::2]  # where nearest-exact samples an 8 -> 4 resize
    assert float(loss_fn([right, coarse_right], target)) < 1e-3
    wrong_coarse = -coarse_right
    plain = build_loss(TrainConfig(data="d", output="o"))
    single = float(plain(wrong_coarse, target[..., 1::2, 1::2]))
    # the coarser output weighs half (MONAI's "exp" weights 1, 1/2, ...)
    assert float(loss_fn([right, wrong_coarse], target)) == pytest.approx(0.5 * single, rel=1e-3)


def test_a_coarser_output_ignores_what_lies_outside_the_region():
    target = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    target[..., 2:4, 2:4] = 1
    roi = torch.zeros(1, 1, 8, 8)
    roi[..., :4, :4] = 1
    coarse = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = deeply_supervised(build_loss(TrainConfig(data="d", output="o")))
    value = loss([torch.zeros(1, 2, 8, 8), ignore_outside(coarse, target, roi)], target)
    value.backward()
    assert torch.all(coarse.grad[..., 2:, :] == 0) and torch.all(coarse.grad[..., :, 2:] == 0)
    assert coarse.grad[..., :2, :2].abs().sum() > 0


DEEP = FAST | {"deep_supervision": 2}


@pytest.fixture(scope="module")
def deep_run(micro_msd: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("deep") / "run"
    train(TrainConfig(data=str(micro_msd), output=str(run), **DEEP))
    return run


@pytest.mark.slow
def test_a_deeply_supervised_run_resumes_exactly_and_saves_the_plain_model(
    deep_run: Path, micro_msd: Path, tmp_path: Path
):
    resumed_run = tmp_path / "resumed"
    _train_until(TrainConfig(data=str(micro_msd), output=str(resumed_run), **DEEP), 1)
    train(TrainConfig(data=str(micro_msd), output=str(resumed_run), resume=True, **DEEP))
    resumed = load_checkpoint(resumed_run / "last.pt")
    straight = load_checkpoint(deep_run / "last.pt")
    assert resumed.epoch == straight.epoch == 2
    torch.testing.assert_close(resumed.model_state, straight.model_state, rtol=1e-4, atol=1e-5)
    heads = straight.training_state["deep_supervision_heads"]
    torch.testing.assert_close(
        resumed.training_state["deep_supervision_heads"], heads, rtol=1e-4, atol=1e-5
    )
    assert not any("heads" in key for key in straight.model_state)


@pytest.mark.slow
def test_predict_takes_a_deeply_supervised_model_as_it_is(
    deep_run: Path, micro_msd: Path, runner, tmp_path: Path
):
    """Its masks and probabilities are those of the plain U-Net it saved: the same checkpoint
    rebuilt without the deep-supervision heads (nor their option, nor the resume state)."""
    deep = load_checkpoint(deep_run / "last.pt")
    assert "deep_supervision_heads" in deep.training_state
    plain = Checkpoint(deep.architecture, deep.inputs, load_model(deep).state_dict())
    save_checkpoint(plain, tmp_path / "plain.pt")
    outputs = {}
    for name, model in (("deep", deep_run), ("plain", tmp_path / "plain.pt")):
        result = invoke(
            runner, "predict", "--model", model, "--input", micro_msd / "imagesTr",
            "--output", tmp_path / name, "--save-probabilities",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[name] = {
            path.name: np.asarray(nib.load(str(path)).dataobj)
            for path in sorted((tmp_path / name).glob("*.nii.gz"))
        }
    assert len(outputs["deep"]) == 8  # 4 masks and 4 probability maps
    assert outputs["deep"].keys() == outputs["plain"].keys()
    for name, array in outputs["deep"].items():
        np.testing.assert_array_equal(array, outputs["plain"][name], err_msg=name)
