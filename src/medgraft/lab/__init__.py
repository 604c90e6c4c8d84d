"""Lab experiment drivers and report code: run from a checkout on ../shared/data, not by users."""

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[3]
"""The checkout the lab runs from (``src/medgraft/lab`` lies three folders down): its code reads
and writes the checkout's ``docs/results`` and ``runs``, never from an installed copy."""
