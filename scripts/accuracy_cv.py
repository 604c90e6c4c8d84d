"""5-fold cross-validation of the shipped recipes on the shared real data.

Two steps, each resumable and safe to rerun:

    python scripts/accuracy_cv.py train --dataset hippocampus   # trains the folds not yet done
    python scripts/accuracy_cv.py report --dataset hippocampus  # predicts, scores per case
    python scripts/accuracy_cv.py ablate --ablation coronal     # one change, on its folds

``train`` trains every fold without a finished run as ``medgraft crossval`` does (its jobs,
one per fold and view, in this process), and continues an interrupted one from its ``last.pt``.
A finished fold whose options fingerprint differs from what the recipe asks for now is refused
(``--redo-changed`` retrains it). Each run's training calls are timed in its ``wall.json``
(wall time, the machine, the versions and the cores other jobs used meanwhile); a call killed
mid-run (a session's end) is counted from the heartbeat it wrote every 30 s
(``wall.running.json``) when the run resumes. A ``views`` recipe trains one run per view
(``<view>/fold_k``); the fold's time is the sum of its runs' (a view's run reused from an
earlier training with the same options fingerprint counts its own), and its models are scored
as their ensemble.

``ablate`` trains a recipe with one change (``src/medgraft/lab/ablations.yaml``: the options it
changes, the folds, why) in ``<work>/ablations/<name>`` with the CV's split, scores it like
``report`` and writes ``accuracy/ablations.csv`` and ``ablation_folds.csv``. An ablation
measured against an earlier form of the recipe names that form's ablation as its ``baseline``;
``report.py`` pairs the two.

``report`` segments each fold's validation cases with the fold's **last-epoch** model, so the
cases that are scored chose no checkpoint (the epochs are fixed by the recipe), through
``medgraft predict``'s code with the recipe's prediction defaults (and once without clean-up
when the recipe cleans up). It scores them at the images' own resolution with medgraft's evaluation
(MONAI Dice, HD95, NSD) and writes ``docs/results/accuracy/cases.csv`` (per fold, case and
class) and ``folds.csv`` (per fold: options fingerprint, wall time, machine). ``python
scripts/report.py`` derives ``docs/results/accuracy.md`` and the table in ``docs/recipes.md``
from them.
"""

from medgraft.lab.accuracy_cv import main

if __name__ == "__main__":
    main()
