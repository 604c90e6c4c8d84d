"""The shipped encoder table that ``medgraft encoders`` lists: it matches the installed smp and
timm, and listing imports none of torch, smp or timm."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medgraft.models.catalog import catalog, catalog_entry
from medgraft.models.registry import encoder_names, get_encoder
from medgraft.models.weights import download_coordinates, encoder_parameter_count

REGENERATE = "regenerate it: python scripts/encoder_catalog.py"


def test_the_table_matches_the_installed_libraries() -> None:
    table = catalog()
    assert [e["name"] for e in table] == encoder_names(None), REGENERATE
    for entry in table:
        live = catalog_entry(get_encoder(entry["name"]), entry["params"], download_coordinates)
        assert entry == live, f"{entry['name']}: {REGENERATE}"


@pytest.mark.parametrize("name", ["tu-tf_efficientnet_lite0", "resnet18", "mit_b0"])
def test_parameter_counts_are_the_encoders(name: str) -> None:
    entry = next(e for e in catalog() if e["name"] == name)
    assert entry["params"] == encoder_parameter_count(name), REGENERATE


@pytest.mark.slow
def test_listing_imports_no_torch_smp_or_timm() -> None:
    probe = (
        "import sys\nfrom typer.testing import CliRunner\nfrom medgraft.cli import app\n"
        "result = CliRunner().invoke(app, ['encoders'])\nassert result.exit_code == 0\n"
        "assert 'tu-tf_efficientnet_lite0' in result.output\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(done.stdout.split())
    assert not {"torch", "segmentation_models_pytorch", "timm"} & loaded
