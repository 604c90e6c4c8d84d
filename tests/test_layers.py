"""The package's shape: layers import one way, no import cycles, short functions, and the
predict path stays free of the training stack; the scripts are drivers of the package (short
functions, no imports of each other, no ``sys.path`` tricks)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medgraft"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MAX_FUNCTION_LINES = 80
LOWER_LAYERS = {
    # a layer may import itself and the layers listed, nothing above
    "errors": set(),
    "registry": {"errors"},
    "files": {"errors"},
    "runtime": {"errors"},
    "config": {"errors", "files", "registry"},
    "data": {"errors", "files", "registry", "runtime", "config"},
    "models": {"errors", "files", "registry", "runtime", "config", "data"},
    "evaluation": {"errors", "files", "registry", "runtime", "config", "data"},
}
TOP_LAYERS = {"lab"}
"""Layers that may import any other and that no other layer imports."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:``, which never run (annotations only)."""
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def imports_of(path: Path) -> set[str]:
    """medgraft modules imported anywhere in the file, function bodies included (imports for
    type annotations only, under ``TYPE_CHECKING``, are not imports at run time)."""
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medgraft"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("medgraft")}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {
    name: {m for m in imports_of(path) if m in MODULES and m != name}
    for name, path in MODULES.items()
}


def test_no_import_cycles() -> None:
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycle = [*trail[trail.index(target) :], target] if target in trail else [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "medgraft"


@pytest.mark.parametrize("layer", sorted(LOWER_LAYERS))
def test_lower_layers_never_import_upward(layer: str) -> None:
    allowed = LOWER_LAYERS[layer] | {layer, "medgraft"}
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if layer_of(module) == layer
        for target in targets
        if layer_of(target) not in allowed
    )
    assert not upward, upward


@pytest.mark.parametrize("layer", sorted(TOP_LAYERS))
def test_no_layer_imports_a_top_layer(layer: str) -> None:
    downward = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if layer_of(module) != layer
        for target in targets
        if layer_of(target) == layer
    )
    assert not downward, downward


@pytest.mark.parametrize("folder", [PACKAGE, SCRIPTS], ids=["src", "scripts"])
def test_functions_stay_short(folder: Path) -> None:
    long = []
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(folder)}:{node.name} ({length} lines)")
    assert not long, long


SCRIPT_FILES = sorted(SCRIPTS.glob("*.py"))


def top_level_imports(path: Path) -> set[str]:
    """The first part of every module ``path`` imports, function bodies included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
    return found


@pytest.mark.parametrize("script", SCRIPT_FILES, ids=lambda p: p.name)
def test_scripts_import_the_package_never_each_other(script: Path) -> None:
    """Shared code lives in ``medgraft.lab``: a script importing a sibling (or a lab module
    by its bare name) only works with ``scripts/`` or ``lab/`` on the path."""
    siblings = {p.stem for p in SCRIPT_FILES} | {p.stem for p in (PACKAGE / "lab").glob("*.py")}
    assert not top_level_imports(script) & siblings


@pytest.mark.parametrize("script", SCRIPT_FILES, ids=lambda p: p.name)
def test_scripts_leave_the_import_path_alone(script: Path) -> None:
    touched = [
        node.lineno
        for node in ast.walk(ast.parse(script.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not touched, f"{script.name} uses sys.path on lines {touched}"


def loaded_modules(code: str) -> set[str]:
    """Top-level packages a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    return set(done.stdout.split())


def test_options_schema_imports_no_torch() -> None:
    assert "torch" not in loaded_modules("import medgraft.config.schema, medgraft.config.loading")


def test_predict_help_loads_no_training_stack_and_no_torch() -> None:
    loaded = loaded_modules(
        "from typer.testing import CliRunner\nfrom medgraft.cli import app\n"
        "assert CliRunner().invoke(app, ['predict', '--help']).exit_code == 0"
    )
    assert not {"matplotlib", "tensorboard", "torch", "monai"} & loaded, sorted(loaded)


CHOICE_REGISTRIES = {
    "medgraft.training",
    "medgraft.training.losses",
    "medgraft.training.schedules",
    "medgraft.training.trainers",
}
"""The training modules the CLI reads its choices from (``--loss``, ``--schedule``,
``--trainer``): registries of names that import no torch; the training stack stays unloaded."""


def test_the_cli_choice_registries_import_no_torch() -> None:
    registries = ["medgraft.evaluation.metrics", "medgraft.data.writers", *CHOICE_REGISTRIES]
    loaded = loaded_modules("import " + ", ".join(sorted(registries)))
    assert not {"torch", "monai"} & loaded, sorted(loaded)


def medgraft_modules(names: set[str]) -> set[str]:
    return {n for n in names if n == "medgraft" or n.startswith("medgraft.")}


@pytest.mark.slow
def test_a_predict_run_loads_no_medgraft_training_code(tmp_path: Path) -> None:
    """A whole predict run on a saved (random) model: none of medgraft's training modules load,
    and none of the medgraft modules it loads imports matplotlib or TensorBoard.

    (``import monai`` itself loads both, through ``monai.utils.jupyter_utils`` and
    ``monai.visualize``, so a process that uses MONAI has them whatever medgraft does.)
    """
    code = f"""
import numpy as np, nibabel as nib
from pathlib import Path
from typer.testing import CliRunner
from medgraft.cli import app
from medgraft.data.transforms import Preprocessing
from medgraft.models.checkpoint import Checkpoint, ModelInputs, save_checkpoint
from medgraft.models.registry import get_encoder
from medgraft.models.unet import architecture, build_segmenter
work = Path({str(tmp_path)!r})
spec = get_encoder("tu-tf_efficientnet_lite0")
arch = architecture(spec, 3, 2)
inputs = ModelInputs(Preprocessing(volumetric=True), slices=3, labels={{"0": "bg", "1": "fg"}})
save_checkpoint(Checkpoint(arch, inputs, build_segmenter(arch, spec).state_dict()), work / "m.pt")
(work / "in").mkdir()
nib.save(nib.Nifti1Image(np.random.rand(32, 32, 4).astype("float32"), np.eye(4)),
         str(work / "in" / "scan.nii.gz"))
result = CliRunner().invoke(
    app, ["predict", "--model", str(work / "m.pt"), "-i", str(work / "in"), "-o", str(work / "o")]
)
assert result.exit_code == 0, result.output
assert (work / "o" / "scan.nii.gz").is_file()
import sys
print(" ".join(m for m in sys.modules if m.startswith("medgraft")))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    loaded = medgraft_modules(set(done.stdout.split()))
    assert "medgraft.inference.batch" in loaded  # the probe did run the predict path
    training = {m for m in loaded if m.startswith("medgraft.training")}
    assert training <= CHOICE_REGISTRIES, sorted(training - CHOICE_REGISTRIES)
    heavy = {
        module
        for module in loaded
        if module in MODULES
        for node in ast.walk(ast.parse(MODULES[module].read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            name.startswith(("matplotlib", "tensorboard", "torch.utils.tensorboard"))
            for name in [getattr(node, "module", None) or "", *(a.name for a in node.names)]
        )
    }
    assert not heavy, heavy
