"""Write src/medgraft/models/encoder_catalog.json: the encoders `medgraft encoders` lists.

Run after upgrading segmentation-models-pytorch or timm (tests/test_catalog.py fails until
then). Reads the installed packages only, with empty download caches so that no cached
config.json changes the stored defaults; takes about half a minute (parameter counts).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

CATALOG = Path(__file__).resolve().parents[1] / "src/medgraft/models/encoder_catalog.json"


def entries() -> dict:
    import segmentation_models_pytorch as smp
    import timm

    from medgraft.models.catalog import catalog_entry
    from medgraft.models.registry import encoder_names, get_encoder
    from medgraft.models.weights import download_coordinates, encoder_parameter_count

    rows = [
        catalog_entry(get_encoder(name), encoder_parameter_count(name), download_coordinates)
        for name in encoder_names(None)
    ]
    versions = {"segmentation_models_pytorch": smp.__version__, "timm": timm.__version__}
    return {"generated_with": versions, "encoders": rows}


def main() -> None:
    with tempfile.TemporaryDirectory() as empty:
        os.environ.update(HF_HOME=empty, HF_HUB_CACHE=f"{empty}/hub", TORCH_HOME=empty)
        table = entries()
    CATALOG.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {CATALOG}: {len(table['encoders'])} encoders")


if __name__ == "__main__":
    main()
