"""Learning speed: Dice on one hippocampus fold after 5, 15, 30 and 60 CPU-minutes of training,
medgraft (ImageNet encoder, and the same from scratch) against nnU-Net v2 ``2d``.

Steps, each resumable and safe to rerun (finished snapshots, predictions and scores are kept):

    python scripts/learning_speed.py prepare     # nnU-Net raw data, plan + preprocess, trainer
    python scripts/learning_speed.py calibrate   # CPU seconds per iteration -> epochs per method
    python scripts/learning_speed.py train --method medgraft-imagenet   # one process per method
    python scripts/learning_speed.py score       # predict + evaluate every snapshot
    python scripts/report.py                     # docs/results.md, docs/results/learning_speed.*

**The clock** is the training process's CPU time (user + system, all threads; ``time.
process_time``) from its first training iteration on: data loading, augmentation, forward,
backward, optimiser, logging and checkpoints count; setup before training (loading volumes,
nnU-Net's preprocessing) and validation during training do not. Each method trains in one
process with one thread and no loader workers, so a CPU-minute is the same unit for both tools
and does not depend on what else the machine runs (two runs share the 2 cores; their wall time
is recorded but not used). On this machine, a run with both cores to itself would reach a point
in about half its CPU-minutes of wall time if both threads were fully used.

**The runs.** One run per method and seed on fold 0 of the 5-fold split ``accuracy_cv.py``
uses (144 training cases; the 36 validation cases are never seen in training and are what is
scored). ``--seed N`` trains and scores replicate N (medgraft's ``--seed``: decoder
initialisation, sampling, augmentation; nnU-Net seeds nothing, so its replicates are fresh
runs) in ``<work>/seed_N``; scoring replaces only the rows of the runs it finds (that seed's
methods with snapshots), so one method can be rerun without the others, and a later seed trains
the plans of the committed calibration, so seeds can run in different sessions.
Each run's learning-rate schedule (poly for both) is sized by calibration to end at the last
point; the models at earlier points are snapshots of that run, not runs planned for the
shorter budgets. medgraft runs the shipped ``mri-2.5d`` recipe with its epochs changed and one
view, the axial one the first seed trained (``--views axial``: one model learning, as nnU-Net's
``2d`` trains one; the recipe's three views would take three times the CPU per point), and
``--weights none`` for scratch. nnU-Net runs its stock ``2d`` plan and trainer with the
batch size set to ``NNUNET_BATCH`` in ``nnUNetPlans.json`` (the stock plan's batch makes one
iteration take > 37 s on 2 cores) and the changes listed in ``nnunet_budget.py``; nnU-Net plans
and preprocesses from the 144 training cases only.

**Scoring.** Every snapshot segments the 36 validation cases (medgraft: ``medgraft predict``
with the recipe's defaults; nnU-Net: ``nnUNetv2_predict`` without TTA, and with its mirroring
TTA at the last point), scored by medgraft's evaluation (MONAI Dice, HD95, NSD) at the images'
own resolution. Rows go to ``docs/results/learning_speed.csv`` (per method, point, case and
class), ``learning_speed_points.csv`` (per snapshot: CPU minutes, iterations, wall time),
``learning_speed_calibration.csv`` (per method: CPU seconds per iteration, the planned epochs,
whether it was trained) and ``learning_speed_inference.csv`` (seconds per case of each
prediction call, with the load). nnU-Net ``3d_fullres`` is calibrated but trained only when
asked (``train --method nnunet-3d_fullres``): its calibration says how many of the stock
schedule's 250,000 iterations the budget holds.
"""

from medgraft.lab.learning_speed import main

if __name__ == "__main__":
    main()
