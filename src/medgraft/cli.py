"""The ``medgraft`` command line: one subcommand per job a researcher runs."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medgraft.errors import MedgraftError

app = typer.Typer(
    help="Medical image segmentation by transfer learning from ImageNet encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
_state = {"debug": False}

DEMO_DATA = Path("data") / "hippocampus"


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show Python tracebacks on errors.")
    ] = False,
) -> None:
    _state["debug"] = debug


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (MSD, nnU-Net raw, or images/+labels/).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Run folder for checkpoints, config and metrics.")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="Named recipe (see `medgraft recipes`) or recipe .yaml: the defaults."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML file with any of these options; it and typed flags beat --recipe."),
    ] = None,
    encoder: Annotated[str, typer.Option(help="smp encoder name or tu-<timm model>.")] = (
        "tu-tf_efficientnet_lite0"
    ),
    weights: Annotated[
        str, typer.Option(help="imagenet | none (scratch) | PATH to a weight file.")
    ] = "imagenet",
    weights_dir: Annotated[
        Path | None,
        typer.Option(help="Folder of weight files <encoder>.pth (also $MEDGRAFT_WEIGHTS_DIR)."),
    ] = None,
    offline: Annotated[bool, typer.Option(help="Never download weights.")] = False,
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 2e-3,
    schedule: Annotated[str, typer.Option(help="poly | cosine (after warm-up).")] = "poly",
    warmup_epochs: Annotated[int, typer.Option(min=0, help="Linear LR warm-up epochs.")] = 0,
    grad_clip: Annotated[float, typer.Option(min=0.0, help="Gradient norm clip (0: off).")] = 12.0,
    val_fraction: Annotated[
        float, typer.Option(help="Share of cases held out for validation (without --folds).")
    ] = 0.2,
    split_file: Annotated[
        Path | None,
        typer.Option(help='JSON {"train": [case ids], "val": [case ids]} to use as the split.'),
    ] = None,
    folds: Annotated[int, typer.Option(min=0, help="k-fold cross-validation (0: off).")] = 0,
    fold: Annotated[str, typer.Option(help="Fold to train, or 'all' for each in turn.")] = "0",
    seed: int = 0,
    slices: Annotated[int, typer.Option(help="k adjacent slices per 2.5D sample (odd).")] = 3,
    image_size: Annotated[int, typer.Option(help="Training size of 2D images (resized).")] = 256,
    spacing: Annotated[
        str, typer.Option(help="auto (median in-plane) | none | x,y[,z] in mm.")
    ] = "auto",
    foreground_ratio: Annotated[
        float, typer.Option(help="Share of sampled slices holding foreground (<0: uniform).")
    ] = 0.5,
    samples_per_epoch: Annotated[
        int, typer.Option(min=0, help="Samples drawn per epoch (0: one per training sample).")
    ] = 0,
    lambda_dice: Annotated[float, typer.Option(min=0.0, help="Weight of the Dice loss.")] = 1.0,
    lambda_ce: Annotated[float, typer.Option(min=0.0, help="Weight of the cross-entropy.")] = 1.0,
    augment: Annotated[bool, typer.Option(help="2D augmentation (albumentations).")] = True,
    augment_strength: Annotated[float, typer.Option(min=0.0)] = 1.0,
    stray_labels_to_background: Annotated[
        bool, typer.Option(help="Map label values outside the dataset's labels to 0 (logged).")
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Keep decoded cases on disk here for later runs.")
    ] = None,
    amp: Annotated[str, typer.Option(help="auto | fp16 | bf16 | off")] = "auto",
    channels_last: Annotated[bool, typer.Option(help="channels_last memory format.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    num_workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 0,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --output from last.pt.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --output.")] = False,
    freeze_encoder_epochs: Annotated[
        int, typer.Option(min=0, help="Train only the decoder for the first N epochs.")
    ] = 0,
    encoder_lr_mult: Annotated[
        float, typer.Option(min=0.0, help="Encoder learning rate = lr x this.")
    ] = 1.0,
    init_from: Annotated[
        Path | None,
        typer.Option(help="Start from an earlier medgraft run folder or checkpoint."),
    ] = None,
    init_part: Annotated[
        str, typer.Option(help="With --init-from: 'encoder' or 'all' (head kept if classes match).")
    ] = "encoder",
) -> None:
    """Fine-tune a U-Net with a pretrained encoder on a labelled dataset."""
    from medgraft.engine.config import explicit_cli_params, load_config_file, merge_config
    from medgraft.engine.train import TrainConfig
    from medgraft.engine.train import train as run_training

    typed = explicit_cli_params(ctx)
    values = {
        k: v
        for k, v in ctx.params.items()
        if k not in {"config", "recipe", "fold", "augment", "augment_strength"}
    }
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    file_values = load_config_file(config) if config else {}
    if recipe:
        from medgraft.engine.recipes import load_recipe

        chosen = load_recipe(recipe)
        file_values = {**chosen.train, "recipe": chosen.name, **file_values}
    merged = merge_config(file_values, values, typed)
    augment_options = {"flips": False, **merged.get("augment", {})}
    if "augment" in typed:
        augment_options["enabled"] = augment
    if "augment_strength" in typed:
        augment_options["strength"] = augment_strength
    merged["augment"] = augment_options
    fold_setting = fold if "fold" in typed else str(file_values.get("fold", fold))
    if fold_setting == "all":
        if not merged.get("folds"):
            raise MedgraftError("--fold all needs --folds K")
        folds_to_run = list(range(merged["folds"]))
    else:
        try:
            folds_to_run = [int(fold_setting)]
        except ValueError as exc:
            raise MedgraftError(f"--fold must be a number or 'all', not '{fold_setting}'") from exc
    for fold_index in folds_to_run:
        result = run_training(TrainConfig(**{**merged, "fold": fold_index}))
        console.print(
            f"best validation Dice {result.best_dice:.3f} at epoch {result.best_epoch}; "
            f"model: {result.run_dir / 'best.pt'} ({result.seconds:.0f}s)"
        )


@app.command()
def study(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option(help="Study folder: runs, results.csv, summary.md.")],
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (default with --quick: the demo data).")
    ] = None,
    inits: Annotated[
        str, typer.Option(help="Comma-separated: imagenet, none (scratch), or RUN_DIR/checkpoint.")
    ] = "imagenet,none",
    fractions: Annotated[
        str, typer.Option(help="Comma-separated shares of the training cases (nested).")
    ] = "0.1,0.25,0.5,1.0",
    seeds: Annotated[int, typer.Option(min=1, help="Runs per init and fraction.")] = 3,
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    encoder: Annotated[str, typer.Option(help="smp encoder name or tu-<timm model>.")] = (
        "tu-tf_efficientnet_lite0"
    ),
    val_fraction: Annotated[
        float, typer.Option(help="Share of cases in the one validation set of every run.")
    ] = 0.2,
    config: Annotated[
        Path | None, typer.Option(help="YAML of further training options (as for train).")
    ] = None,
    offline: Annotated[bool, typer.Option(help="Never download weights.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    quick: Annotated[
        bool,
        typer.Option(help="Demo data, fractions 0.25,1.0, 2 seeds, 4 epochs: ~10 min on a CPU."),
    ] = False,
) -> None:
    """Compare initialisations across label fractions and seeds; reruns skip finished runs."""
    from medgraft.engine.config import explicit_cli_params, load_config_file
    from medgraft.engine.study import StudyPlan, quick_plan, run_study

    typed = explicit_cli_params(ctx)
    if data is None and not quick:
        raise MedgraftError("--data is required (or use --quick for the embedded demo data)")
    plan = (
        quick_plan(str(data or DEMO_DATA), str(output))
        if quick
        else StudyPlan(str(data), str(output))
    )
    if not quick or "inits" in typed:
        plan.inits = [i.strip() for i in inits.split(",") if i.strip()]
    if not quick or "fractions" in typed:
        try:
            plan.fractions = [float(f) for f in fractions.split(",") if f.strip()]
        except ValueError as exc:
            raise MedgraftError(f"--fractions must be numbers, not '{fractions}'") from exc
    for name, value in (("seeds", seeds), ("epochs", epochs), ("val_fraction", val_fraction)):
        if not quick or name in typed:
            setattr(plan, name, value)
    options = {**plan.train_options, **(load_config_file(config) if config else {})}
    for name, value in (("encoder", encoder), ("offline", offline), ("device", device)):
        if name in typed or name not in options:
            options[name] = value
    plan.train_options = options
    plan.command = _command_line("study", ctx, typed)
    rows = run_study(plan)
    console.print(f"{len(rows)} runs; summary and plots in {output}")


@app.command()
def predict(
    model: Annotated[
        list[Path],
        typer.Option(help="Run folder (uses best.pt) or checkpoint; repeat to ensemble."),
    ],
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Image file, DICOM series, or folder of them.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the masks.")],
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta",
            help="Mirroring test-time augmentation. Default: the model's recipe's, else on.",
        ),
    ] = None,
    largest_component: Annotated[
        bool | None,
        typer.Option(
            "--largest-component/--no-largest-component",
            help="Keep only the largest connected component of each class. Default: as the "
            "model's recipe says, else off.",
        ),
    ] = None,
    min_size: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Remove components smaller than N voxels per class "
            "(default: the recipe's, else 0).",
        ),
    ] = None,
    save_probabilities: Annotated[
        bool, typer.Option(help="Also write class probabilities (NIfTI, or .npz for 2D).")
    ] = False,
    overlays: Annotated[bool, typer.Option(help="Write a PNG montage per case for QA.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Redo cases whose mask exists (default: skip them).")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Slices per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    amp: Annotated[str, typer.Option(help="auto | fp16 | bf16 | off")] = "auto",
) -> None:
    """Segment a file or every NIfTI / DICOM series / 2D image in a folder.

    Under torchrun each process takes its share of the cases.
    """
    from medgraft.engine.predict import PredictOptions, input_cases
    from medgraft.engine.train import amp_dtype, select_device

    torch_device = select_device(device)
    options = PredictOptions(
        batch_size=batch_size,
        tta=tta,
        largest_component=largest_component,
        min_size=min_size,
        save_probabilities=save_probabilities,
        overlays=overlays,
        overwrite=overwrite,
        device=torch_device,
        amp_dtype=amp_dtype(amp, torch_device),
    )
    failed = _run_predict(model, input_cases(input), output, options)
    if failed:
        raise typer.Exit(1)


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option(help="Folder of predicted masks.")],
    truth: Annotated[Path, typer.Option(help="Folder of ground-truth masks (same names).")],
    labels: Annotated[Path | None, typer.Option(help="dataset.json naming the labels.")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write per-case Dice, HD95 and NSD to this CSV.")
    ] = None,
    nsd_tolerance: Annotated[
        float, typer.Option(min=0.0, help="Normalized surface Dice tolerance (mm).")
    ] = 1.0,
    stray_labels_to_background: Annotated[
        bool, typer.Option(help="Count mask values outside the classes as background (listed).")
    ] = False,
) -> None:
    """Per-case, per-class Dice, HD95 and normalized surface Dice (spacing-aware, MONAI)."""
    _run_evaluate(
        pred,
        truth,
        labels,
        output,
        cases=None,
        nsd_tolerance=nsd_tolerance,
        stray_to_background=stray_labels_to_background,
    )


@app.command()
def demo(
    output: Annotated[
        Path | None, typer.Option(help="Demo folder (default runs/demo-<time>).")
    ] = None,
    data: Annotated[Path, typer.Option(help="Dataset to use.")] = DEMO_DATA,
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Train on the embedded MRI data, segment held-out scans, print per-class Dice (offline)."""
    from medgraft.data.discovery import discover_dataset
    from medgraft.engine.predict import PredictOptions
    from medgraft.engine.train import TrainConfig, select_device
    from medgraft.engine.train import train as run_training

    started = time.perf_counter()
    output = output or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    if not data.is_dir():
        raise MedgraftError(
            f"{data}: demo data not found; run from the medgraft checkout or pass --data"
        )
    result = run_training(
        TrainConfig(
            data=str(data),
            output=str(output / "model"),
            epochs=epochs,
            val_fraction=0.25,
            offline=True,
            device=device,
            # 8 epochs are too few for augmentation to pay off: measured here it cost 0.04 Dice
            augment={"enabled": False},
        )
    )
    held_out = [Path(r["image"]) for r in result.val_cases]
    options = PredictOptions(device=select_device(device), tta=False)  # trained without flips
    _run_predict([output / "model"], held_out, output / "predictions", options)
    spec = discover_dataset(data)
    if spec.test:
        _run_predict(
            [output / "model"],
            [Path(r["image"]) for r in spec.test],
            output / "predictions-unlabelled",
            options,
        )
    truth_dir = Path(result.val_cases[0]["label"]).parent
    evaluation = _run_evaluate(
        output / "predictions",
        truth_dir,
        None,
        output / "dice.csv",
        cases=[r["case_id"] for r in result.val_cases],
        label_names=spec.labels,
    )
    console.print(
        f"[bold]demo finished in {time.perf_counter() - started:.0f}s[/]: mean foreground "
        f"Dice {evaluation.mean_dice():.3f} on {len(held_out)} held-out cases; outputs in {output}"
    )


@app.command()
def export(
    model: Annotated[Path, typer.Option(help="Run folder (uses best.pt) or checkpoint file.")],
    format: Annotated[str, typer.Option("--format", help="onnx | torchscript")],
    output: Annotated[Path, typer.Option(help="File to write (a .json sidecar goes beside it).")],
) -> None:
    """Export a trained model to ONNX or TorchScript (normalisation included)."""
    from medgraft.engine.export import export_model

    path = export_model(model, format, output)
    console.print(f"wrote {path} and {path.with_name(path.name + '.json')}")


@app.command()
def encoders(
    timm_filter: Annotated[
        str | None,
        typer.Option("--timm", help="Also list timm models matching this pattern, e.g. '*lite*'."),
    ] = None,
) -> None:
    """List encoders with parameter counts, pretrained sources and offline availability."""
    from medgraft.models.registry import encoder_names, get_encoder
    from medgraft.models.weights import available_offline, encoder_parameter_count

    table = Table(title="Encoders (name for --encoder)")
    for column in ("encoder", "params (M)", "pretrained sources", "offline", "mean / std"):
        table.add_column(column, no_wrap=True)
    for name in encoder_names(timm_filter):
        spec = get_encoder(name)
        offline = [s for s in spec.sources.values() if available_offline(spec, s)]
        source = spec.normalization()
        table.add_row(
            name,
            f"{encoder_parameter_count(name) / 1e6:.1f}",
            ", ".join(spec.sources) or "-",
            "yes: " + ", ".join(s.name for s in offline) if offline else "no",
            f"{_short(source.mean)} / {_short(source.std)}",
        )
    Console(width=max(console.width, 150)).print(table)


@app.command()
def recipes(
    name: Annotated[
        str | None, typer.Argument(help="Print this recipe's file (settings and reasons).")
    ] = None,
) -> None:
    """List the shipped training recipes: what each is for and what it measured."""
    from medgraft.engine.recipes import load_recipe, recipe_names

    if name is not None:
        recipe = load_recipe(name)
        console.print(recipe.path.read_text(encoding="utf-8"), markup=False, highlight=False)
        return
    table = Table(title="Recipes (name for medgraft train --recipe)")
    for column in ("recipe", "for", "input", "epochs", "measured"):
        table.add_column(column)
    for recipe_name in recipe_names():
        recipe = load_recipe(recipe_name)
        train_options = recipe.train
        size = (
            f"{train_options.get('slices', 3)} slices (2.5D)"
            if "slices" in train_options
            else f"{train_options.get('image_size', 256)} px"
        )
        table.add_row(
            f"[bold]{recipe.name}[/]\n{escape(recipe.summary)}",
            escape(recipe.use_for),
            size,
            str(train_options.get("epochs", "")),
            escape(str(recipe.measured.get("result", "not measured yet"))),
        )
    Console(width=max(console.width, 150)).print(table)


@app.command("fetch-weights")
def fetch_weights(
    encoder: Annotated[str, typer.Argument(help="Encoder name, as for --encoder.")],
    to: Annotated[Path, typer.Option("--to", help="Weights folder to store the file in.")],
    source: Annotated[str, typer.Option(help="Pretrained source to fetch.")] = "imagenet",
) -> None:
    """Download encoder weights (needs a network) into a folder for later air-gapped use."""
    from medgraft.models.registry import get_encoder
    from medgraft.models.weights import fetch_weights as fetch

    path = fetch(get_encoder(encoder), source, to)
    console.print(
        f"saved {path}; use it offline with --weights-dir {to} (or MEDGRAFT_WEIGHTS_DIR={to})"
    )


def _command_line(name: str, ctx: typer.Context, typed: set[str]) -> str:
    """The options the user typed, as a command to paste: reports say how they were made."""
    words = ["medgraft", name]
    for key, value in ctx.params.items():
        if key not in typed:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            words += [flag, str(value)]
    return " ".join(words)


def _short(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def _run_predict(models: list[Path], inputs: list[Path], output: Path, options) -> int:
    """Segment ``inputs`` (this rank's share under torchrun), write summary.csv; count failures."""
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from medgraft.engine.predict import load_predictor, predict_cases, shard, write_summary

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    share = shard(inputs, rank, world)
    predictor = load_predictor(models, options)
    options = options.with_model_defaults(predictor.data)
    if options.tta and not predictor.data.get("mirror_axes"):
        err_console.print(
            "note: the model was trained without flips, so predicting without "
            "mirroring TTA (it would average in predictions it never learned)"
        )
    results, slices, started = [], 0, time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[speed]}"),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("segmenting", total=len(share), speed="")
        for result in predict_cases(predictor, share, output, options):
            results.append(result)
            slices += result.slices
            speed = slices / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, speed=f"{speed:.1f} slices/s" if slices else "")
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        err_console.print(f"[red]failed:[/] {escape(r.message)}")
    summary = output / ("summary.csv" if world == 1 else f"summary.rank{rank}.csv")
    write_summary(results, summary, predictor.data["labels"], predictor.data["volumetric"])
    skipped = sum(r.status == "skipped" for r in results)
    console.print(
        f"segmented {len(results) - len(failed) - skipped}/{len(results)} case(s) into {output} "
        f"({skipped} skipped as already done, {len(failed)} failed); summary: {summary}"
    )
    return len(failed)


def _run_evaluate(
    pred: Path,
    truth: Path,
    labels: Path | None,
    output: Path | None,
    cases: list[str] | None,
    label_names: dict[int, str] | None = None,
    nsd_tolerance: float = 1.0,
    stray_to_background: bool = False,
):
    from medgraft.engine.evaluate import evaluate_folders

    if labels is not None:
        from medgraft.data.discovery import parse_labels

        try:
            label_names = parse_labels(json.loads(labels.read_text()), labels)
        except (OSError, json.JSONDecodeError) as exc:
            raise MedgraftError(f"{labels}: cannot read labels ({exc})") from exc
    evaluation = evaluate_folders(
        pred,
        truth,
        label_names,
        cases=cases,
        nsd_tolerance=nsd_tolerance,
        stray_to_background=stray_to_background,
    )
    Console(width=max(console.width, 120)).print(evaluation.table())
    for path, voxels in evaluation.stray.items():
        err_console.print(f"[yellow]stray labels counted as background:[/] {path} ({voxels})")
    for case in evaluation.missing:
        err_console.print(f"[yellow]missing prediction:[/] {case}")
    if evaluation.extra:
        err_console.print(
            f"{len(evaluation.extra)} prediction(s) without ground truth were not scored"
        )
    if output is not None:
        evaluation.write_csv(output)
        console.print(f"wrote {output}")
    return evaluation


def main() -> None:
    """Console entry point: user errors become one red line and exit code 1."""
    try:
        app()
    except KeyboardInterrupt:
        if _state["debug"]:
            raise
        err_console.print("interrupted")
        sys.exit(130)
    except MedgraftError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
