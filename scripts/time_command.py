"""Time a command and append the result, with the machine and the load, to a CSV.

    python scripts/time_command.py --label demo --csv docs/results/demo/runs.csv -- medgraft demo

The row holds the wall time, the cores other jobs used meanwhile (``medgraft/provenance.py``),
the CPU, versions, commit and date; ``scripts/report.py`` quotes the median of the rows.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from medgraft.files import append_csv
from medgraft.provenance import Measurement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="what the row calls the command")
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with Measurement() as measured:
        returncode = subprocess.run(command).returncode
    if returncode != 0:
        sys.exit(f"{' '.join(command)} exited with {returncode}; nothing recorded")
    append_csv(args.csv, [{"command": args.label, **measured.record()}])
    print(
        f"{args.label}: {measured.seconds:.1f} s, other jobs {measured.other_jobs_cores:.2f} cores"
    )


if __name__ == "__main__":
    main()
