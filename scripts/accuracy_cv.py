"""5-fold cross-validation of the shipped recipes on the shared real data.

Two steps, each resumable and safe to rerun:

    python scripts/accuracy_cv.py train --dataset hippocampus   # trains the folds not yet done
    python scripts/accuracy_cv.py report --dataset hippocampus  # predicts, scores per case
    python scripts/accuracy_cv.py ablate --ablation batch-dice  # one change, on its folds

``train`` runs ``medgraft train --recipe R --folds 5 --fold k`` through the CLI for every fold
without a finished run, and continues an interrupted one with ``--resume``. A finished fold whose
options fingerprint differs from what the recipe asks for now is refused (``--redo-changed``
retrains it). Each call's wall time, the machine, the versions and the cores other jobs used
meanwhile are added up in ``<fold>/wall.json``; a call killed mid-fold (a session's end) is
counted from the heartbeat it wrote every 30 s (``wall.running.json``) when the fold resumes.
A ``views`` recipe trains one run per view (``<view>/fold_k``) in the same call; the fold's
time is that call's, plus the recorded time of any view's run reused from an earlier training
(same options fingerprint), and its models are scored as their ensemble.

``ablate`` trains a recipe with one change (``ABLATIONS``: the options it adds, the folds) in
``<work>/ablations/<name>`` with the CV's split, scores it like ``report`` and writes
``accuracy/ablations.csv`` and ``ablation_folds.csv``. An ablation measured against an earlier
form of the recipe names that form's ablation as its ``baseline``; ``report.py`` pairs the two.

``report`` segments each fold's validation cases with the fold's **last-epoch** model, so the
cases that are scored chose no checkpoint (the epochs are fixed by the recipe), through
``medgraft predict`` with the recipe's prediction defaults (and once without clean-up when the
recipe cleans up). It scores them at the images' own resolution with medgraft's evaluation
(MONAI Dice, HD95, NSD) and writes ``docs/results/accuracy/cases.csv`` (per fold, case and
class) and ``folds.csv`` (per fold: options fingerprint, wall time, machine). ``python
scripts/report.py`` derives ``docs/results/accuracy.md`` and the table in ``docs/recipes.md``
from them.
"""

from medgraft.lab.accuracy_cv import main

if __name__ == "__main__":
    main()
