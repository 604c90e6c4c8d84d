"""The ``medgraft`` command line: one subcommand per job a researcher runs.

Thin by design: each command parses, builds its options and calls one function. Options come
from the dataclasses of ``config.schema`` (:func:`schema_options` turns their fields into
flags), and every flag defaults to "not given" (``None``): defaults live in the schema alone,
and only what the user typed is passed on, to win over recipes and config files.
Heavy modules (torch, MONAI) are imported inside the commands, so ``--help`` stays quick.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import typing
import warnings
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medgraft.config.schema import (
    CROSSVAL_LEAVES_OUT,
    QUICK_STUDY,
    CompareOptions,
    CrossvalOptions,
    DemoOptions,
    EvaluateOptions,
    ExportOptions,
    FetchOptions,
    LaunchOptions,
    PredictLaunchOptions,
    PredictOptions,
    StudyOptions,
    TrainConfig,
)
from medgraft.errors import MedgraftError
from medgraft.registry import Registry
from medgraft.sectioned_help import SectionedCommand

app = typer.Typer(
    help="Medical image segmentation by transfer learning from ImageNet encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # click's plain help: every option name in full at any width (rich's panels cut long
    # names such as --freeze-encoder-epochs to "--freeze-encoder…" at 80 columns); each
    # command's options in sections by SectionedCommand (cls=), not by rich's panels
    rich_markup_mode=None,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
_state = {"debug": False}
LIBRARY_NOISE = {
    "loggers": (
        # MONAI's optional nvImageCodec DICOM decoder: absent on most machines, and pydicom's
        # own decoders are used instead; said once by a logger and once by a warning per load
        "monai.data.nvimgcodec_pydicom_plugin",
        # MLflow creating or upgrading a SQLite store's tables (--tracker mlflow)
        "mlflow.store.db.utils",
    ),
    "warning": r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register",
}


def quiet_library_noise() -> None:
    """Hide the known, harmless messages of the libraries underneath (``--verbose`` keeps them):
    only these, so any other warning still reaches the user."""
    for logger in LIBRARY_NOISE["loggers"]:
        logging.getLogger(logger).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=LIBRARY_NOISE["warning"], category=UserWarning)


NESTED = "__"
"""Separates a nested option's parts in parameter names: ``augment__strength``."""


def schema_options(
    cls: type, leave_out: frozenset[str] = frozenset()
) -> Callable[[Callable], Callable]:
    """Decorator: add a flag for every CLI field of the options dataclass ``cls`` to a command,
    but those named in ``leave_out`` (options the command sets itself).

    The command takes them as ``**options`` (``None`` when not given); nested dataclass fields
    with a ``flag`` (e.g. ``augment.strength`` as ``--augment-strength``) become flags too.
    Stacked, the decorators give a command the flags of several dataclasses.
    """

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        generated = [
            _parameter(name, f, hint)
            for name, f, hint in _cli_fields(cls)
            if name.split(NESTED)[0] not in leave_out
        ]
        command.__signature__ = signature.replace(parameters=own + generated)
        return command

    return decorate


def _cli_fields(cls: type, prefix: str = "") -> list[tuple[str, Field, Any]]:
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        if f.metadata.get("cli", True) is False:
            continue
        if is_dataclass(hints[f.name]):
            found += [
                (name, sub, hint)
                for name, sub, hint in _cli_fields(hints[f.name], f"{f.name}{NESTED}")
                if "flag" in sub.metadata
            ]
        else:
            found.append((prefix + f.name, f, hints[f.name]))
    return found


def _parameter(name: str, f: Field, hint: Any) -> inspect.Parameter:
    """A keyword parameter typer reads as ``--flag`` with help text, the schema's default and
    its ``--help`` section; an option with ``choices`` lists them and refuses any other value
    while parsing."""
    base = next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
    if f.metadata.get("path"):
        base = Path
    flag = "--" + f.metadata.get("flag", f.name.replace("_", "-"))
    declarations = [f"{flag}/--no-{flag[2:]}"] if base is bool else [flag]
    help_text = f.metadata.get("help", "")
    parser = None
    if "choices" in f.metadata:
        choice = Choice(flag, f.metadata["choices"], several=f.metadata.get("several", False))
        help_text += f" {'Any of' if choice.several else 'One of'}: {', '.join(choice.names())}."
        parser = choice.parse
    if f.default not in (MISSING, None):
        # the schema's default, shown: the parameter's own default is None ("not given")
        shown = (flag if f.default else f"--no-{flag[2:]}") if base is bool else f.default
        help_text += f" [default: {shown}]"
    option = typer.Option(
        *declarations,
        help=help_text,
        min=f.metadata.get("min"),
        parser=parser,
        rich_help_panel=f.metadata.get("section"),
    )
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[base | None, option],
    )


@dataclass(frozen=True)
class Choice:
    """The valid values of an option: a fixed tuple, or the names in a registry given as
    ``"module:NAME"`` (light modules: listing them imports no torch)."""

    flag: str
    choices: tuple[str, ...] | str
    several: bool = False

    def registry(self) -> Registry | None:
        if not isinstance(self.choices, str):
            return None
        module, _, attribute = self.choices.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def names(self) -> list[str]:
        registry = self.registry()
        return list(self.choices) if registry is None else registry.names()

    def parse(self, value: str) -> str:
        """``value`` if valid (each part, for a list), else one line naming the valid ones;
        raised while parsing, before any file is read."""
        parts = [p.strip() for p in value.split(",")] if self.several else [value]
        registry = self.registry()
        for part in parts:
            if registry is not None:
                registry.check(part)
            elif part not in self.choices:
                raise MedgraftError(
                    f"{self.flag} '{part}' is not valid; choose from {', '.join(self.choices)}"
                )
        return value


def typed_options(options: dict[str, Any]) -> dict[str, Any]:
    """The flags the user typed, nested as the schema nests them (``{"augment": {...}}``)."""
    layer: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        value = str(value) if isinstance(value, Path) else value
        if NESTED in name:
            outer, inner = name.split(NESTED, 1)
            layer.setdefault(outer, {})[inner] = value
        else:
            layer[name] = value
    return layer


def options_of(typed: dict[str, Any], cls: type) -> dict[str, Any]:
    """The typed flags that are fields of ``cls``, for a command taking the flags of several
    options dataclasses."""
    names = {f.name for f in fields(cls)}
    return {name: value for name, value in typed.items() if name in names}


def run_command(argv: list[str]) -> None:
    """One medgraft command line in this process: what a launcher's job runs (here, or in a
    Slurm job). An error propagates; a non-zero exit raises."""
    code = app(args=argv, standalone_mode=False)
    if code not in (None, 0):
        raise MedgraftError(f"medgraft {' '.join(argv)} exited with status {code}")


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show Python tracebacks on errors.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also show the libraries' own notices.")
    ] = False,
) -> None:
    _state["debug"] = debug
    if not verbose:
        quiet_library_noise()


@app.command(cls=SectionedCommand)
@schema_options(TrainConfig)
def train(
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Named recipe (see `medgraft recipes`) or recipe .yaml: the defaults, with its "
            "cuda profile on a CUDA device. Not given: the shipped recipe that fits --data "
            "(printed); none: the plain defaults.",
            rich_help_panel="run",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML file with any of these options; it and typed flags beat --recipe.",
            rich_help_panel="run",
        ),
    ] = None,
    fold: Annotated[
        str | None,
        typer.Option(
            help=f"Fold to train, or 'all' for each in turn. [default: {TrainConfig.fold}]",
            rich_help_panel="validation and output",
        ),
    ] = None,
    **options: Any,
) -> None:
    """Fine-tune a U-Net with a pretrained encoder on a labelled dataset."""
    from medgraft.config.loading import load_config_file, overlay_options
    from medgraft.config.resolve import train_configs
    from medgraft.runtime import is_cuda
    from medgraft.training.recipe_choice import recipe_for_training

    flags = typed_options(options)
    given = overlay_options([load_config_file(config) if config else {}, flags])
    choice = recipe_for_training(recipe, given)
    if choice.line:
        console.print(escape(choice.line), highlight=False)
    runs = train_configs(
        flags, recipe=choice.recipe, config_file=config, fold=fold, on_cuda=is_cuda,
        recipe_chosen=choice.line,
    )  # fmt: skip
    if runs[0].recipe_profile:
        console.print(escape(_profile_line(choice.recipe)), highlight=False)
    from medgraft.models.checkpoint import checkpoint_in_run
    from medgraft.training.trainer import run_training

    for run in runs:
        result = run_training(run)
        shipped = checkpoint_in_run(result.run_dir, PredictOptions.checkpoint)
        console.print(
            f"trained in {result.seconds:.0f}s; predict --model {result.run_dir} uses {shipped} "
            f"(the last epoch's model); best validation Dice {result.best_dice:.3f} at epoch "
            f"{result.best_epoch} (best.pt)"
        )


def _profile_line(recipe: str) -> str:
    """What the recipe's cuda profile changes, said when it applies."""
    from medgraft.config.recipes import load_recipe

    chosen = load_recipe(recipe)
    changes = ", ".join(f"{name} {gpu}" for name, _, gpu in chosen.cuda_changes())
    return (
        f"recipe {chosen.name} on a CUDA device: its cuda profile sets {changes} "
        "(--config and typed flags still win)"
    )


@app.command(cls=SectionedCommand)
@schema_options(StudyOptions)
@schema_options(LaunchOptions)
def study(
    output: Annotated[
        Path,
        typer.Option(help="Study folder: runs, results.csv, summary.md.", rich_help_panel="run"),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset folder (default with --quick: the demo data).", rich_help_panel="data"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML of further training options (as for train).", rich_help_panel="run"
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            help=(
                "The embedded demo data and a small grid ("
                + ", ".join(f"{k} {v}" for k, v in QUICK_STUDY.items())
                + "): about 10 minutes on a CPU; typed flags win."
            ),
            rich_help_panel="run",
        ),
    ] = False,
    **options: Any,
) -> None:
    """Compare initialisations across label fractions and seeds; reruns skip finished runs.

    With --launcher slurm each missing run is a job of one Slurm job array."""
    from medgraft.config.flags import as_flags
    from medgraft.launchers import make_launcher
    from medgraft.study import plan_from_cli, run_study

    typed = typed_options(options)
    flags = options_of(typed, StudyOptions)
    named = typed_options(
        {"data": data, "output": output, "config": config, "quick": quick or None}
    )
    command = " ".join(["medgraft study", *as_flags({**named, **flags}, StudyOptions)])
    plan = plan_from_cli(output, data, flags, quick=quick, config_file=config, command=command)
    launch = LaunchOptions(**options_of(typed, LaunchOptions))
    rows = run_study(plan, make_launcher(launch, output, run_command))
    if rows is not None:
        console.print(f"{len(rows)} runs; summary and plots in {output}")


@app.command(cls=SectionedCommand)
@schema_options(CrossvalOptions)
@schema_options(TrainConfig, leave_out=CROSSVAL_LEAVES_OUT)
@schema_options(LaunchOptions)
def crossval(
    output: Annotated[
        Path,
        typer.Option(
            help="Cross-validation folder: the folds' runs, cases.csv, folds.csv, summary.md.",
            rich_help_panel="run",
        ),
    ],
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Named recipe (see `medgraft recipes`) or recipe .yaml: the defaults.",
            rich_help_panel="run",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML file with training options; it and typed flags beat --recipe.",
            rich_help_panel="run",
        ),
    ] = None,
    **options: Any,
) -> None:
    """Train every fold, score each fold's validation cases with its final model, summarise.

    Reruns skip finished folds and continue interrupted ones. With --launcher slurm each
    missing fold (and view) trains as a job of one Slurm job array.
    """
    from medgraft.config.flags import as_flags
    from medgraft.crossval import CrossvalPlan, run_crossval
    from medgraft.launchers import make_launcher

    typed = typed_options(options)
    launch = LaunchOptions(**options_of(typed, LaunchOptions))
    typed = {k: v for k, v in typed.items() if k not in {f.name for f in fields(LaunchOptions)}}
    own_names = {f.name for f in fields(CrossvalOptions)}
    own = CrossvalOptions(**{k: v for k, v in typed.items() if k in own_names})
    flags = {k: v for k, v in typed.items() if k not in own_names}
    named = typed_options({"output": output, "recipe": recipe, "config": config})
    command = " ".join(["medgraft crossval", *as_flags({**named, **flags, "folds": own.folds})])
    plan = CrossvalPlan(output, flags, recipe, config, own.folds, own.redo_changed, command=command)
    summary = run_crossval(plan, make_launcher(launch, output, run_command))
    if summary is not None:
        console.print(summary, markup=False, highlight=False)
        console.print(f"wrote {output / 'summary.md'}, cases.csv and folds.csv")


@app.command("crossval-train", hidden=True)
def crossval_train(
    job: Annotated[Path, typer.Option(help="A crossval training job's options (its YAML).")],
) -> None:
    """One training of ``medgraft crossval``, as its launcher runs it: timed into the run's
    wall.json wherever it runs."""
    from medgraft.crossval import run_job_file

    run_job_file(job)


@app.command(cls=SectionedCommand)
@schema_options(CompareOptions)
def compare(
    first: Annotated[Path, typer.Argument(help="A crossval folder (its cases.csv).")],
    second: Annotated[Path, typer.Argument(help="The crossval folder to compare it with.")],
    **options: Any,
) -> None:
    """Pair two crossval folders by case: the mean difference, its interval and a verdict."""
    from medgraft.crossval import compare_folders
    from medgraft.evaluation.metrics import METRICS

    chosen = CompareOptions(**typed_options(options))
    title = METRICS.get(chosen.metric).title
    table = Table(
        title=f"{title}, A = {first}, B = {second}, paired by case",
        caption="A - B: its 95% bootstrap interval over the paired cases; a verdict only when "
        "it excludes 0 (ahead: A is higher).",
    )
    table.add_column("class", no_wrap=True)
    for column in ("cases", "A", "B", "A - B", "verdict"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in compare_folders(first, second, chosen.metric):
        table.add_row(
            row.name, str(row.cases), f"{row.first:.3f}", f"{row.second:.3f}",
            str(row.difference), row.difference.verdict,
        )  # fmt: skip
    Console(width=max(console.width, 100)).print(table)  # every cell whole at 80 columns


@app.command(cls=SectionedCommand)
@schema_options(PredictOptions)
@schema_options(PredictLaunchOptions)
def predict(
    model: Annotated[
        list[Path],
        typer.Option(
            help="Run folder (its last.pt unless --checkpoint says otherwise, or those of its "
            "fold_N/ and view folders) or checkpoint file; repeat to ensemble.",
            rich_help_panel="model and weights",
        ),
    ],
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            "-i",
            help="Image file, DICOM series, or folder of them.",
            rich_help_panel="data",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Folder for the masks.", rich_help_panel="validation and output"
        ),
    ],
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: segment only share K (from 0) of N of the inputs and record it in "
            "OUTPUT/shards/, for the merge that writes summary.csv: one task of --shards.",
            rich_help_panel="cluster",
        ),
    ] = None,
    **options: Any,
) -> None:
    """Segment a file or every NIfTI / DICOM series / 2D image in a folder.

    Under torchrun each process takes its share of the cases; with --launcher slurm, shards
    of them are the tasks of a Slurm job array.
    """
    from medgraft.inference.batch import input_cases, run_batch
    from medgraft.launchers import job_threads, pinned_threads, predict_in_shards

    typed = typed_options(options)
    flags = options_of(typed, PredictOptions)
    launch = PredictLaunchOptions(**options_of(typed, PredictLaunchOptions))
    if shard is not None:  # a launcher's job: the launcher pinned the threads
        part = shard_part(shard)
        report = run_batch(model, input_cases(input), output, PredictOptions(**flags), part)
        launched = None
    elif launch.launcher == "slurm" or launch.shards:
        report, launched = predict_in_shards(model, input, output, flags, launch, run_command)
        if report is None:  # --no-wait: the same command gathers the shards later
            return
    else:
        with pinned_threads(job_threads(launch)):
            report = run_batch(model, input_cases(input), output, PredictOptions(**flags))
        launched = None
    console.print(report.line())
    for failure in launched.failed if launched else []:
        err_console.print(f"[red]failed:[/] {escape(failure.line())}")
    if report.count("failed") or (launched and launched.failed):
        raise typer.Exit(1)


def shard_part(text: str) -> tuple[int, int]:
    """``--shard K/N`` as (K, N), with 0 <= K < N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise MedgraftError(f"--shard must be K/N with 0 <= K < N, not '{text}'")
    return int(index), int(count)


@app.command(cls=SectionedCommand)
@schema_options(EvaluateOptions)
def evaluate(
    pred: Annotated[Path, typer.Option(help="Folder of predicted masks.", rich_help_panel="data")],
    truth: Annotated[
        Path,
        typer.Option(help="Folder of ground-truth masks (same names).", rich_help_panel="data"),
    ],
    labels: Annotated[
        Path | None, typer.Option(help="dataset.json naming the labels.", rich_help_panel="data")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write per-case Dice, HD95 and NSD to this CSV.",
            rich_help_panel="validation and output",
        ),
    ] = None,
    **options: Any,
) -> None:
    """Per-case, per-class Dice, HD95 and normalized surface Dice (spacing-aware, MONAI)."""
    from medgraft.evaluation.evaluate import evaluate_and_report

    evaluate_and_report(
        pred, truth, EvaluateOptions(**typed_options(options)), labels_file=labels, output=output
    )


@app.command(cls=SectionedCommand)
@schema_options(DemoOptions)
def demo(
    output: Annotated[
        Path | None,
        typer.Option(help="Demo folder (default runs/demo-<time>).", rich_help_panel="run"),
    ] = None,
    **options: Any,
) -> None:
    """Train on the embedded MRI data, segment held-out scans, print per-class Dice (offline)."""
    from medgraft.demo import run_demo

    run_demo(DemoOptions(**typed_options(options)), output)


@app.command(cls=SectionedCommand)
@schema_options(ExportOptions)
def export(
    model: Annotated[
        Path,
        typer.Option(
            help="Run folder (its last.pt unless --checkpoint says) or checkpoint file.",
            rich_help_panel="model and weights",
        ),
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format", help="onnx | torchscript", rich_help_panel="validation and output"
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            help="File to write (a .json sidecar goes beside it).",
            rich_help_panel="validation and output",
        ),
    ],
    **options: Any,
) -> None:
    """Export a trained model to ONNX or TorchScript (normalisation included)."""
    from medgraft.inference.export import export_model

    path = export_model(model, format, output, ExportOptions(**typed_options(options)).checkpoint)
    console.print(f"wrote {path} and {path.with_name(path.name + '.json')}")


@app.command(cls=SectionedCommand)
def encoders(
    timm_filter: Annotated[
        str | None,
        typer.Option(
            "--timm",
            help="Also list timm models matching this pattern, e.g. '*lite*'.",
            rich_help_panel="model and weights",
        ),
    ] = None,
) -> None:
    """List encoders with parameter counts, pretrained sources and offline availability."""
    from medgraft.models.catalog import catalog, listed_normalization, offline_places

    table = Table(title="Encoders (name for --encoder)")
    for column in ("encoder", "params (M)", "pretrained sources", "offline", "mean / std"):
        table.add_column(column, no_wrap=True)
    listed = catalog()  # shipped table: no torch, smp or timm import
    if timm_filter:
        listed += _timm_entries(timm_filter, {e["name"] for e in listed})
    for entry in listed:
        sources = entry["sources"]
        offline = [s["name"] for s in sources if any(offline_places(entry["name"], s))]
        mean, std = listed_normalization(entry)
        table.add_row(
            entry["name"],
            f"{entry['params'] / 1e6:.1f}",
            ", ".join(s["name"] for s in sources) or "-",
            "yes: " + ", ".join(offline) if offline else "no",
            f"{_short(mean)} / {_short(std)}",
        )
    Console(width=max(console.width, 150)).print(table)


def _timm_entries(pattern: str, known: set[str]) -> list[dict]:
    """Catalog-shaped entries for timm models matching ``pattern`` (imports timm and torch)."""
    from medgraft.models.catalog import catalog_entry
    from medgraft.models.registry import encoder_names, get_encoder
    from medgraft.models.weights import download_coordinates, encoder_parameter_count

    entries = []
    for name in encoder_names(pattern):
        if name in known:
            continue
        spec = get_encoder(name)
        entries.append(catalog_entry(spec, encoder_parameter_count(name), download_coordinates))
    return entries


@app.command(cls=SectionedCommand)
def recipes(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Print this recipe's file (settings and reasons) and what its cuda profile "
            "changes on a CUDA GPU."
        ),
    ] = None,
) -> None:
    """List the shipped training recipes: what each is for, trains on a CPU and on a CUDA GPU,
    and what it measured."""
    from medgraft.config.recipes import load_recipe, recipe_names

    if name is not None:
        recipe = load_recipe(name)
        console.print(recipe.path.read_text(encoding="utf-8"), markup=False, highlight=False)
        if recipe.cuda:
            table = Table(title=f"{recipe.name}: what its cuda profile changes on a CUDA device")
            for column in ("option", "CPU (train:)", "CUDA (train: + cuda:)"):
                table.add_column(column)
            for option, cpu, gpu in recipe.cuda_changes():
                table.add_row(option, escape(str(cpu)), escape(str(gpu)))
            console.print(table)
        return
    table = Table(title="Recipes (name for medgraft train --recipe)")
    for column in ("recipe", "for", "input", "epochs", "on a CUDA GPU", "measured"):
        table.add_column(column)
    for recipe_name in recipe_names():
        recipe = load_recipe(recipe_name)
        train_options = recipe.train
        size = _recipe_input(train_options)
        if "views" in train_options:  # one model each, averaged
            size += f" in views {train_options['views'].replace(',', ', ')}"
        cuda = {**train_options, **recipe.cuda}
        table.add_row(
            f"[bold]{recipe.name}[/]\n{escape(recipe.summary)}",
            escape(recipe.use_for),
            size,
            str(train_options.get("epochs", "")),
            f"{_recipe_input(cuda)}, {cuda.get('epochs', '')} epochs" if recipe.cuda else "-",
            escape(str(recipe.measured.get("result", "not measured yet"))),
        )
    Console(width=max(console.width, 150)).print(table)


def _recipe_input(options: dict) -> str:
    if "slices" in options:
        return f"{options['slices']} slices (2.5D)"
    return f"{options.get('image_size', TrainConfig.image_size)} px"


@app.command("fetch-weights", cls=SectionedCommand)
@schema_options(FetchOptions)
def fetch_weights(
    encoder: Annotated[str, typer.Argument(help="Encoder name, as for --encoder.")],
    to: Annotated[
        Path,
        typer.Option(
            "--to", help="Weights folder to store the file in.", rich_help_panel="model and weights"
        ),
    ],
    **options: Any,
) -> None:
    """Download encoder weights (needs a network) into a folder for later air-gapped use."""
    from medgraft.models.registry import get_encoder
    from medgraft.models.weights import fetch_weights as fetch

    path = fetch(get_encoder(encoder), FetchOptions(**typed_options(options)).source, to)
    console.print(
        f"saved {path}; use it offline with --weights-dir {to} (or MEDGRAFT_WEIGHTS_DIR={to})"
    )


def _short(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


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
