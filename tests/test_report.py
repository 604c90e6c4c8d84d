"""Every reported figure comes from a committed CSV: README.md and docs/ equal what
``scripts/report.py`` (``medgraft.lab.reports``) derives from them, and changing a number makes
this suite fail."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medgraft.evaluation.stats import difference_interval, mean_interval
from medgraft.files import read_csv, write_csv
from medgraft.lab import CHECKOUT, accuracy_cv, measured
from medgraft.lab.accuracy_cv import ABLATIONS
from medgraft.lab.reports import accuracy, blocks, demo, gpu, learning_speed
from medgraft.lab.shared_subsets import SHARED

REPO = Path(__file__).resolve().parents[1]


def test_readme_and_results_equal_what_their_sources_give():
    diffs = blocks.differences(REPO)
    assert not diffs, "run python scripts/report.py:\n" + "".join(diffs)[:4000]


def test_committed_ablation_rows_are_the_changes_the_cv_script_defines():
    """Rows are moved by hand when a recipe adopts a change (its ablation runs become the CV,
    the old CV an ablation): each ablation's rows must still say what ``ablations.yaml`` runs."""
    folder = REPO / "docs" / "results" / "accuracy"
    for name, by_fold in (
        ("ablations.csv", read_csv(folder / "ablations.csv")),
        ("ablation_folds.csv", read_csv(folder / "ablation_folds.csv")),
    ):
        assert {r["ablation"] for r in by_fold} == set(ABLATIONS), name
        for ablation, setup in ABLATIONS.items():
            rows = [r for r in by_fold if r["ablation"] == ablation]
            described = {(r["change"], r["baseline"], r["dataset"]) for r in rows}
            assert described == {(setup.summary, setup.baseline, setup.dataset)}, (
                f"{name}: {ablation}"
            )
            assert {int(r["fold"]) for r in rows} == set(setup.folds), f"{name}: {ablation}"


def test_every_results_page_is_generated():
    generated = set(blocks.generated(REPO))
    pages = set((REPO / "docs" / "results").rglob("*.md"))
    assert pages <= generated, f"hand-written results pages: {sorted(pages - generated)}"


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def copy_of_repo(tmp_path: Path) -> Iterator[Path]:
    """What report.py reads and writes, copied (the demo data linked), over a clone of the
    checkout's history at its commit (nothing checked out): the notes beside the figures read
    that history."""
    _git(tmp_path, "clone", "--quiet", "--no-checkout", str(REPO), str(tmp_path))
    _git(tmp_path, "update-ref", "--no-deref", "HEAD", _git(REPO, "rev-parse", "HEAD"))
    for part in ("README.md", "docs", "src/medgraft/config/recipes"):
        source, target = REPO / part, tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hippocampus").symlink_to(REPO / "data" / "hippocampus")
    yield tmp_path
    shutil.rmtree(tmp_path)  # the clone too, not only what the last runs' retention keeps


@pytest.mark.slow  # regenerates the whole report once per block
def test_editing_a_number_in_any_block_fails_the_check(copy_of_repo: Path):
    """Blocks live in README.md and in docs/*.md pages; an edit in either is caught."""
    pages = blocks.block_pages(copy_of_repo)
    originals = {page: page.read_text() for page in pages}
    names = {b["name"] for text in originals.values() for b in blocks.BLOCK.finditer(text)}
    assert names == set(blocks.BLOCKS)
    edited = set()
    for page, original in originals.items():
        for block in blocks.BLOCK.finditer(original):
            digit = re.search(r"\d", block["body"])
            if digit is None:  # a block that says something was not measured quotes no number
                continue
            at = block.start("body") + digit.start()
            changed = "1" if original[at] != "1" else "2"
            page.write_text(original[:at] + changed + original[at + 1 :])
            diffs = blocks.differences(copy_of_repo)
            name = page.relative_to(copy_of_repo)
            assert any(f"{name} (committed)" in d for d in diffs), block["name"]
            page.write_text(original)
            edited.add(name.parts[0])
    assert edited == {"README.md", "docs"}  # the overview in the README, accuracy in a page
    assert blocks.differences(copy_of_repo) == []


def test_editing_a_recipes_measured_block_fails_the_check(copy_of_repo: Path):
    """The recipes' ``measured:`` blocks are generated too (``reports.recipes``): what
    ``medgraft recipes`` shows cannot drift from the accuracy CV."""
    recipe = copy_of_repo / "src" / "medgraft" / "config" / "recipes" / "mri-2.5d.yaml"
    text = recipe.read_text()
    measured_at = text.index("\nmeasured:")
    digit = measured_at + re.search(r"\d", text[measured_at:]).start()
    recipe.write_text(text[:digit] + ("1" if text[digit] != "1" else "2") + text[digit + 1 :])
    diffs = blocks.differences(copy_of_repo)
    assert any("recipes/mri-2.5d.yaml (committed)" in d for d in diffs)
    recipe.write_text(text)
    assert blocks.differences(copy_of_repo) == []


def test_a_block_in_a_docs_page_links_from_that_page(copy_of_repo: Path):
    """Block functions write links from the checkout's root; in docs/ they are rewritten."""
    page = copy_of_repo / "docs" / "results.md"
    block = next(b for b in blocks.BLOCK.finditer(page.read_text()) if b["name"] == "study")
    assert "](results/study_hippocampus/summary.md)" in block["body"]
    assert "](docs/" not in block["body"]
    assert blocks.relink("[a](docs/results/x.csv) [b](https://x.org/docs/y)", "docs") == (
        "[a](results/x.csv) [b](https://x.org/docs/y)"
    )
    assert blocks.relink("[a](docs/results/x.csv)", ".") == "[a](docs/results/x.csv)"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text + "<!-- report:accuracy -->x<!-- /report:accuracy -->\n", "more than"),
        (lambda text: text + "<!-- report:nonsense -->x<!-- /report:nonsense -->\n", "unknown"),
        (lambda text: blocks.BLOCK.sub("", text), "in no page"),
    ],
)
def test_a_block_in_two_pages_unknown_or_missing_stops_the_report(copy_of_repo, edit, message):
    readme = copy_of_repo / "README.md"
    readme.write_text(edit(readme.read_text()))
    with pytest.raises(SystemExit, match=message):
        blocks.differences(copy_of_repo)


def test_every_relative_link_in_the_readme_and_docs_resolves():
    def anchors(page: Path) -> set[str]:
        headings = re.findall(r"(?m)^#+ (.*)$", page.read_text())
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}

    for page in [*blocks.block_pages(REPO), REPO / "scripts" / "README.md"]:
        for match in re.finditer(r"\]\((?![a-z]+:)([^)\s]+)\)", page.read_text()):
            target, _, anchor = match[1].partition("#")
            path = page.parent / target if target else page
            assert path.exists(), f"{page.relative_to(REPO)}: {match[1]}"
            if anchor and path.suffix == ".md":
                assert anchor in anchors(path), f"{page.relative_to(REPO)}: {match[1]}"


def test_editing_a_per_case_score_changes_the_report(copy_of_repo: Path):
    cases = copy_of_repo / "docs" / "results" / "accuracy" / "cases.csv"
    lines = cases.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("dice")] = "0.00000"
    cases.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    changed = {d.splitlines()[0] for d in blocks.differences(copy_of_repo)}
    assert any("results/accuracy.md" in c for c in changed)
    assert any("docs/recipes.md" in c for c in changed)  # the accuracy block lives there


def _write_learning_speed(
    results: Path, imagenet_5min: float, seeds: int = 3, seed_1_pace: float = 1.0
) -> None:
    """Synthetic learning-speed sources: 30 cases, three methods, ``seeds`` seeds, points 5 and
    60 CPU-minutes; nnU-Net at 0.5 after 5 minutes, every method at 0.85 after 60. Every run
    makes 30 iterations per CPU-minute, seed 1's ``seed_1_pace`` times that."""
    rng = np.random.default_rng(1)
    rows, points = ["method,seed,point_min,case,class,dice,hd95,nsd"], []
    for method in ("medgraft-imagenet", "medgraft-scratch", "nnunet-2d"):
        for seed in range(seeds):
            for point in (5, 60):
                level = (
                    0.85 if point == 60 else {"medgraft-imagenet": imagenet_5min}.get(method, 0.5)
                )
                for case in range(30):
                    for name in ("Anterior", "Posterior"):
                        dice = level + rng.normal(0, 0.02)
                        rows.append(
                            f"{method},{seed},{point},case_{case:02d},{name},{dice:.5f},1.5,0.9"
                        )
                iterations = round(point * 30 * (seed_1_pace if seed == 1 else 1.0))
                points.append(
                    f"{method},{seed},{point},{point + 0.01},{iterations},{point // 5},1,12,75,"
                    "32,32,CPU,2,3.11,2.14,0.1,abc,2026-11-29"
                )
    (results / "learning_speed.csv").write_text("\n".join(rows) + "\n")
    (results / "learning_speed_calibration.csv").write_text(
        "method,cpu_seconds_per_iteration,calibration_iterations,trained,threads,planned_epochs,"
        "iterations_per_epoch,batch_size,stock_batch_size\n"
        "nnunet-3d_fullres,60.00,4,no,1,2,50,7,7\n"
    )
    (results / "learning_speed_points.csv").write_text(
        "method,seed,point_min,cpu_minutes,iterations,epoch,threads,planned_epochs,"
        "iterations_per_epoch,batch_size,stock_batch_size,cpu,cores,python,torch,medgraft,"
        "commit,date\n" + "\n".join(points) + "\n"
    )


def test_learning_speed_claims_follow_from_the_per_case_scores(copy_of_repo: Path):
    results = copy_of_repo / "docs" / "results"
    _write_learning_speed(results, imagenet_5min=0.8)
    block = learning_speed.learning_speed_readme(copy_of_repo)
    assert "at 5 CPU-minutes, medgraft (ImageNet) against nnU-Net v2 `2d`: **ahead**" in block
    assert "at 60 CPU-minutes, medgraft (ImageNet) against nnU-Net v2 `2d`: **not dist" in block
    assert re.search(r"\| medgraft, ImageNet encoder \| 0\.(79|80)\d \[", block)
    assert "3 seeds per method" in block
    page = blocks.generated(copy_of_repo)[results / "learning_speed.md"]
    assert "| nnU-Net v2 `2d` | 2 | 5 | 5.0 | 150 | 2.00 | 1 | 12 x 75 | 32 (32) |" in page
    assert re.search(r"\| medgraft, ImageNet encoder \| 1 \| 0\.(79|80)\d \| 0\.8[45]\d \|", page)
    assert "nnU-Net v2 `3d_fullres` was not trained: 60 CPU-minutes hold about 60 of" in page

    _write_learning_speed(results, imagenet_5min=0.3)  # now behind: the text follows
    block = learning_speed.learning_speed_readme(copy_of_repo)
    assert "at 5 CPU-minutes, medgraft (ImageNet) against nnU-Net v2 `2d`: **behind**" in block


def test_the_page_points_out_kept_runs_of_one_method_at_different_paces(copy_of_repo: Path):
    results = copy_of_repo / "docs" / "results"
    _write_learning_speed(results, imagenet_5min=0.8, seed_1_pace=1.05)  # within 10%: silent
    page = blocks.generated(copy_of_repo)[results / "learning_speed.md"]
    assert "went at different paces" not in page
    _write_learning_speed(results, imagenet_5min=0.8, seed_1_pace=0.7)
    page = blocks.generated(copy_of_repo)[results / "learning_speed.md"]
    assert (
        "(CPU seconds per iteration; medgraft, ImageNet encoder: seed 0 2.00, seed 1 2.86, "
        "seed 2 2.00;" in page
    )


def test_learning_speed_makes_no_claim_from_one_seed(copy_of_repo: Path):
    results = copy_of_repo / "docs" / "results"
    _write_learning_speed(results, imagenet_5min=0.8, seeds=1)
    block = learning_speed.learning_speed_readme(copy_of_repo)
    assert "**ahead**" not in block and "**behind**" not in block
    assert (
        "at 5 CPU-minutes, medgraft (ImageNet) against nnU-Net v2 `2d`: no verdict yet (1 seed, "
        "a claim needs 3), difference 0.3" in block
    )
    assert "## Per seed" not in blocks.generated(copy_of_repo)[results / "learning_speed.md"]


def _ablation_section(repo: Path, cases: list[dict], folds: list[dict]) -> str:
    """The accuracy page's ablation section after writing these ablation rows."""
    folder = repo / "docs" / "results" / "accuracy"
    for name, rows in (("ablations.csv", cases), ("ablation_folds.csv", folds)):
        with (folder / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    page = accuracy.accuracy_page(repo)
    return page[page.index("## Ablations") :]


def test_an_ablation_is_paired_with_the_recipe_on_the_same_cases(copy_of_repo: Path):
    folder = copy_of_repo / "docs" / "results" / "accuracy"
    cases = read_csv(folder / "cases.csv")
    fold = [
        r
        for r in cases
        if r["dataset"] == "hippocampus" and r["fold"] == "0" and r["variant"] == "recipe"
    ]
    assert fold, "the committed CV has fold 0"
    better = [
        {"ablation": "x", "change": "a change"}
        | r
        | {"dice": f"{min(1.0, float(r['dice']) + 0.05):.5f}"}
        for r in fold
    ]
    folds = [
        {"ablation": "x", "change": "a change"} | r
        for r in read_csv(folder / "folds.csv")
        if r["dataset"] == "hippocampus" and r["fold"] == "0"
    ]
    section = _ablation_section(copy_of_repo, better, folds)
    rows = [line for line in section.splitlines() if line.startswith("| a change")]
    assert len(rows) == 1 and "| ahead |" in rows[0] and f"0; {len(fold) // 2} |" in rows[0]
    assert section.count("| ahead |") == 3  # each class and the mean


def test_ablation_wall_times_name_the_processors_when_the_arms_ran_on_different_ones(
    copy_of_repo: Path,
):
    folder = copy_of_repo / "docs" / "results" / "accuracy"
    fold = [
        {"ablation": "x", "change": "a change"} | r
        for r in read_csv(folder / "cases.csv")
        if r["dataset"] == "hippocampus" and r["fold"] == "0" and r["variant"] == "recipe"
    ]
    cv_fold = [
        r
        for r in read_csv(folder / "folds.csv")
        if r["dataset"] == "hippocampus" and r["fold"] == "0"
    ]
    cv_cpu = cv_fold[0]["cpu"]

    def wall_cell(cpu: str) -> str:
        folds = [{"ablation": "x", "change": "a change"} | r | {"cpu": cpu} for r in cv_fold]
        section = _ablation_section(copy_of_repo, fold, folds)
        [row] = [line for line in section.splitlines() if line.startswith("| a change")]
        return row.rstrip(" |").rsplit("| ", 1)[1]

    assert " on " not in wall_cell(cv_cpu)
    other = wall_cell("Another CPU")
    assert other.startswith(f"{float(cv_fold[0]['seconds']) / 60:.1f} min")
    assert f"on {cv_cpu}, " in other and other.endswith(" on Another CPU")


def test_a_change_against_an_earlier_recipe_is_paired_with_that_ablation(copy_of_repo: Path):
    """After the recipe takes up a change, a change measured on the recipe before it is paired
    with the ablation that undoes the change (its runs are the old recipe's), not the CV."""
    folder = copy_of_repo / "docs" / "results" / "accuracy"
    fold = [
        r
        for r in read_csv(folder / "cases.csv")
        if r["dataset"] == "hippocampus" and r["fold"] == "0" and r["variant"] == "recipe"
    ]
    folds = [
        r
        for r in read_csv(folder / "folds.csv")
        if r["dataset"] == "hippocampus" and r["fold"] == "0"
    ]

    def shifted(rows: list[dict], by: float) -> list[dict]:
        return [r | {"dice": f"{min(1.0, max(0.0, float(r['dice']) + by)):.5f}"} for r in rows]

    arms = {  # the old recipe far behind the CV; the change a little ahead of the old recipe
        "old": ("the old recipe", "", shifted(fold, -0.2)),
        "new": ("a change", "old", shifted(fold, -0.17)),
    }
    cases = [
        {"ablation": name, "change": change, "baseline": baseline} | r
        for name, (change, baseline, rows) in arms.items()
        for r in rows
    ]
    fold_rows = [
        {"ablation": name, "change": change, "baseline": baseline} | r
        for name, (change, baseline, _) in arms.items()
        for r in folds
    ]
    section = _ablation_section(copy_of_repo, cases, fold_rows)
    [old] = [line for line in section.splitlines() if line.startswith("| the old recipe |")]
    [new] = [line for line in section.splitlines() if line.startswith("| a change")]
    assert "| behind |" in old
    assert new.startswith("| a change; against: the old recipe |") and "| ahead |" in new


def test_the_clean_up_is_paired_class_by_class_with_the_same_models(copy_of_repo: Path):
    path = copy_of_repo / "docs" / "results" / "accuracy" / "cases.csv"
    cases = [r for r in read_csv(path) if r["variant"] != "raw"]
    recipe = [r for r in cases if r["dataset"] == "hippocampus" and r["variant"] == "recipe"]
    worse = -0.03  # without the clean-up: worse on the first class, equal on the second
    first_class = recipe[0]["class"]
    raw = [
        r
        | {
            "variant": "raw",
            "dice": f"{float(r['dice']) + worse * (r['class'] == first_class):.5f}",
        }
        for r in recipe
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(cases[0]))
        writer.writeheader()
        writer.writerows(cases + raw)
    page = accuracy.accuracy_page(copy_of_repo)
    section = page[page.index("## Ablations") :].split("\n## ")[0]
    start = section.index("| no clean-up")
    rows = section[start:].splitlines()[:3]
    assert f"0, 1, 2, 3, 4; {len(recipe) // 2} | {first_class} |" in rows[0]
    assert "| behind |" in rows[0] and "| not distinguishable |" in rows[1]
    assert "same models" in rows[0]


def test_error_bands_give_what_each_kind_of_error_costs(copy_of_repo: Path):
    path = copy_of_repo / "docs" / "results" / "accuracy" / "error_bands.csv"
    columns = ["dataset", "recipe", "fold", "case", "class", "true_positive", *accuracy.BANDS]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        # Dice 2*80/(160+10+30) = 0.8; 30 of 40 wrong voxels on the border
        writer.writerow(["hippocampus", "mri-2.5d", 0, "a", "Anterior", 80, 10, 0, 20, 10])
        writer.writerow(["hippocampus", "mri-2.5d", 0, "b", "Anterior", 0, 5, 0, 0, 0])  # absent
    page = accuracy.accuracy_page(copy_of_repo)
    # far errors removed: 2*90/(180+10+20) = 0.857; border removed: 2*100/(200+0+10) = 0.952
    assert "| MSD Hippocampus, 180 MRI volumes | Anterior | 1 | 75% | 0.800 | 0.857 | 0.952 |" in (
        page
    )


def test_the_cpu_precision_verdict_follows_the_measured_speeds(copy_of_repo: Path):
    path = copy_of_repo / "docs" / "results" / "bench" / "amp_cpu.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {"cores": "2", "cpu": "a CPU", "cpu_capability": "AVX2", "shared": "no"}
    machine |= {"cpu_bf16_flags": "none", "recipe": "mri-2.5d"}

    def write(speeds: dict[str, list[float]]) -> str:
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, [*machine, "precision", "samples_per_s"])
            writer.writeheader()
            for precision, values in speeds.items():
                writer.writerows(
                    machine | {"precision": precision, "samples_per_s": v} for v in values
                )
        return gpu.bench_amp_cpu_readme(copy_of_repo)

    slow = write({"fp32": [30.0, 24.0, 26.0], "bf16": [1.0, 1.5, 1.3]})
    assert "26.0 samples/s in fp32 and 1.3 under bf16 autocast, 20.0x slower" in slow
    assert "fp32 stays the CPU default" in slow
    fast = write({"fp32": [10.0, 10.0, 10.0], "bf16": [15.0, 16.0, 14.0]})
    assert "1.5x faster" in fast and "fp32 stays" not in fast


def test_the_gpu_fold_is_paired_case_by_case_with_the_cpu_fold(copy_of_repo: Path):
    path = copy_of_repo / "docs" / "results" / "bench" / "gpu_fold_cases.csv"
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert "not distinguishable" in gpu.bench_gpu_readme(copy_of_repo)
    for row in rows:  # every case 0.05 worse on the GPU
        row["dice"] = f"{float(row['dice']) - 0.05:.5f}"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = gpu.bench_gpu_readme(copy_of_repo)
    assert "-0.051 [" in text and "against the CPU-trained fold: behind" in text
    assert "| Anterior |" in gpu.gpu_page(copy_of_repo)


def test_the_cuda_profiles_say_not_measured_until_bench_gpu_has_run(copy_of_repo: Path):
    assert gpu.gpu_profiles_readme(copy_of_repo).startswith("accuracy and speed not measured")
    assert "Accuracy and speed not measured: `scripts/bench_gpu.py`" in gpu.gpu_page(copy_of_repo)
    bench = copy_of_repo / "docs" / "results" / "bench"
    cpu = [
        r
        for r in read_csv(copy_of_repo / "docs/results/accuracy/cases.csv")
        if (r["dataset"], r["variant"], r["fold"]) == ("drive", "recipe", "0")
    ]
    head = _git(copy_of_repo, "rev-parse", "--short=7", "HEAD")
    cases = [{**r, "dice": f"{float(r['dice']) + 0.03:.5f}", "commit": head} for r in cpu]
    write_csv(bench / "gpu_profile_cases.csv", cases, [*cases[0]])
    fold = {"dataset": "drive", "recipe": "retina-2d", "fold": "0", "cases": str(len(cases)),
            "commit": head, "gpu": "NVIDIA H100", "seconds": "90.0", "views": "1",
            "image_size": "768", "epochs": "100", "batch_size": "8", "amp_dtype": "torch.float16",
            "loop_samples_per_s": "150", "mean_dice": "0.8300", "mean_hd95": "9.5",
            "mean_nsd": "0.86"}  # fmt: skip
    write_csv(bench / "gpu_profile_folds.csv", [fold], list(fold))
    step = {"recipe": "rgb-2d", "encoder": "tu-tf_efficientnet_lite2", "side": "352",
            "batch_size": "32", "channels_last": "off", "peak_gpu_memory_gib": "3.00"}  # fmt: skip
    runs = (("fp32", "400"), ("fp16", "700"))
    speed = [step | {"precision": p, "samples_per_s": v} for p, v in runs]
    write_csv(bench / "gpu_profile_speed.csv", speed, list(speed[0]))
    readme = gpu.gpu_profiles_readme(copy_of_repo)
    assert readme.startswith("`retina-2d` 0.830 mean Dice on drive in 1.5 min of training")
    assert "on one NVIDIA H100" in readme and "measured at" in readme
    page = gpu.gpu_page(copy_of_repo)
    assert "| `retina-2d` | drive fold 0, " in page and "0.030 [" in page and ", ahead (" in page
    assert (
        "| `rgb-2d` | tu-tf_efficientnet_lite2, 352 px, batch 32 | fp16 | off | 1 | 700 | 1.75x |"
        in page
    )


MEASURED = re.compile(
    r"(?<![≥≤] )\b0\.\d{2,}\b"  # a score (a threshold such as "Dice ≥ 0.99" is a setting)
    r"|\b\d+(?:\.\d+)?\s?(?:s|min|GB|MB|slices/s|cases/s|h)\b"  # a time, a size, a speed
)


@pytest.mark.parametrize("page", blocks.block_pages(REPO), ids=lambda p: p.name)
def test_readme_and_docs_quote_measurements_only_inside_generated_blocks(page: Path):
    text = blocks.BLOCK.sub("", page.read_text())
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # commands and their example options
    prose = re.sub(r"`[^`]*`", "", prose)  # inline option values such as `--min-size 50`
    found = MEASURED.findall(prose)
    assert not found, f"measured-looking figures outside report blocks: {found}"


def test_bootstrap_intervals_hold_the_mean_and_tell_a_difference_from_noise():
    rng = np.random.default_rng(1)
    scores = rng.normal(0.8, 0.05, size=(3, 40))
    interval = mean_interval(scores)
    assert interval.low < interval.mean < interval.high
    assert interval.mean == pytest.approx(scores.mean())
    assert interval.high - interval.low < 0.05
    assert mean_interval(np.full(10, 0.5)).low == mean_interval(np.full(10, 0.5)).high == 0.5
    better = scores + 0.05
    assert difference_interval(better, scores).verdict == "ahead"
    assert difference_interval(scores, better).verdict == "behind"
    noise = rng.normal(0.8, 0.05, size=(3, 40))
    assert difference_interval(noise, scores).verdict == "not distinguishable"
    with pytest.raises(ValueError, match="same cases"):
        difference_interval(scores, scores[:, :10])


MEASURED_SHARED = Path("/work/shared/data")
"""Where the committed cross-validation read the shared data: the data folder is one of the
options a fingerprint covers, so the recomputation names the same folder on any machine."""


def test_each_recipes_committed_folds_have_the_fingerprints_its_options_give_now() -> None:
    """The options of every committed CV fold, recomputed from today's recipe, schema and
    option layering, still fingerprint as recorded: a refactoring that changed what a recipe
    trains (or made old runs look changed) fails here."""
    rows = read_csv(CHECKOUT / "docs/results/accuracy/folds.csv")
    assert {r["dataset"] for r in rows} == set(accuracy_cv.DATASETS)
    for row in rows:
        name = row["dataset"]
        data = MEASURED_SHARED / accuracy_cv.dataset_folder(name).relative_to(SHARED)
        runs = accuracy_cv.fold_runs(name, data, Path("runs") / name, int(row["fold"]))
        assert "+".join(runs.values()) == row["options_sha256"], (name, row["fold"])


def _commit(repo: Path, path: str, text: str) -> None:
    """Commit ``path`` with ``text`` as its content (the copy checks nothing out)."""
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    _git(repo, "reset", "--quiet")  # the index from HEAD, so the commit changes only this file
    _git(repo, "add", path)
    _git(repo, "-c", "user.name=test", "-c", "user.email=test@example.invalid",
         "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", f"edit {path}")  # fmt: skip


def _commit_an_edited_line(repo: Path, path: str) -> None:
    first, *rest = _git(repo, "show", f"HEAD:{path}").split("\n")
    _commit(repo, path, "\n".join([f"{first}  # edited", *rest]) + "\n")


def _measured_at_head(repo: Path, figure: str) -> None:
    """The figure's rows as if measured at the copy's newest commit."""
    path = f"docs/results/{measured.FIGURES[figure].rows}"
    rows = read_csv(repo / path)
    head = _git(repo, "rev-parse", "--short=7", "HEAD")
    write_csv(repo / path, [{**r, "commit": head} for r in rows], list(rows[0]))
    _commit(repo, path, (repo / path).read_text())


def test_a_figure_is_flagged_once_the_code_that_produced_it_changes(copy_of_repo: Path):
    for figure in ("gpu", "amp-cpu"):  # GPU: training and prediction; CPU precision: training
        _measured_at_head(copy_of_repo, figure)
        assert "unchanged since" in measured.note(copy_of_repo, figure), figure
    _commit_an_edited_line(copy_of_repo, "src/medgraft/inference/__init__.py")
    assert measured.note(copy_of_repo, "gpu").endswith(
        "before later changes to training, data, models, prediction or scoring: re-measure"
    )
    assert "unchanged since" in measured.note(copy_of_repo, "amp-cpu")  # not its code
    _commit_an_edited_line(copy_of_repo, "src/medgraft/training/__init__.py")
    assert measured.note(copy_of_repo, "amp-cpu").endswith(
        "before later changes to training, data or models: re-measure"
    )
    block = demo.demo_readme(copy_of_repo)
    assert re.search(r"the Dice: .*before later changes to training.*: re-measure\.$", block)


def test_a_figure_without_git_history_is_said_to_be_unchecked(tmp_path: Path):
    results = tmp_path / "docs" / "results" / "bench"
    results.mkdir(parents=True)
    (results / "amp_cpu.csv").write_text("commit,samples_per_s\nabc1234,1.0\n")
    assert measured.note(tmp_path, "amp-cpu") == (
        "measured at abc1234; not checked against the code (no git history)"
    )
