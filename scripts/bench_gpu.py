"""What one CUDA GPU buys the shipped recipes: each recipe's CV fold 0 trained under its cuda
profile and scored as the CPU CV scores it, and the training step at each profile's shape under
each precision.

    python scripts/bench_gpu.py [--work runs/gpu] [--dataset kvasir ...] [--part folds ...]
    python scripts/bench_gpu.py --tiny --work /tmp/gpu-tiny   # the plumbing, on the CPU

Needs a CUDA GPU (it stops at once, saying so, without one) and the shared data (``../shared/data``
beside the checkout, ``shared/data`` inside a copy of it, or ``$MEDGRAFT_SHARED_DATA``). The
default parts finish in under 8 minutes on one H100 by the profiles' estimates. Each appends
rows, with the machine, the versions and the load, to a CSV in ``--results``
(``docs/results/bench``), from which ``python scripts/report.py`` writes ``docs/results/gpu.md``:

- ``profile-speed`` -> ``gpu_profile_speed.csv``: the model alone (forward, backward, step on
  tensors already on the GPU) at each cuda profile's encoder, input size and batch, in fp32, fp16
  (with the gradient scaler) and bf16, each with channels_last off and on.
- ``folds`` -> ``gpu_profile_folds.csv`` and ``gpu_profile_cases.csv``: Kvasir-SEG, DRIVE and
  hippocampus fold 0 of the accuracy CV, each trained by ``medgraft train --device cuda`` (so
  under the recipe's cuda profile; ``--amp`` overrides its precision), its training wall time,
  the loop's samples/s after the first epoch, and its validation cases scored like the CPU CV
  (last-epoch models, the recipe's prediction defaults): Dice, HD95, NSD per case and class;
  ``same_split`` says whether they are the CPU fold's cases.
- ``model`` -> ``gpu_train.csv``: the 64x64 model-alone table measured before the profiles
  (fp32, fp16, bf16 at batch 32 and 256).
- ``predict`` -> ``gpu_predict.csv``: ``medgraft predict`` with the hippocampus fold's three
  models on its validation cases, ``--amp auto`` and ``off``.

A fold already trained in ``--work`` is reused (resumed when cut short), as by
``accuracy_cv.py``. ``--tiny`` runs every part on the CPU with a few steps into
``<work>/results``, never the committed CSVs.
"""

from medgraft.lab.gpu_bench import main

if __name__ == "__main__":
    main()
