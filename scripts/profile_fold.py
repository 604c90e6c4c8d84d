"""Where one CV fold's time goes: a shipped recipe's fold trained for real, timed per phase.

    python scripts/profile_fold.py --dataset drive [--fold 0] [--work runs/profile]

Trains the dataset's recipe (``accuracy_cv.DATASETS``) on the accuracy CV's fold, from
scratch, in ``<work>/<dataset>``, with what ``medgraft train`` would use on this machine, and
appends a row per run (one per view of ``mri-2.5d``) and phase to
``docs/results/speed/fold_profile.csv``: wall and CPU seconds spent in setup (decoding the
cases, building the model), data loading (waiting for batches), training steps, validation,
checkpoints, logs (metrics.csv, val_cases.csv, TensorBoard, the console line), plots
(curves.png) and the rest, with the machine, the versions and the cores other jobs used. A
fold takes as long as the CV's (``docs/recipes.md``): run it with the cores to itself.
"""

from medgraft.lab.fold_profile import main

if __name__ == "__main__":
    main()
