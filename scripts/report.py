"""Every results table and figure in README.md and docs/, regenerated from the committed
per-case and timing CSVs, and nothing else.

    python scripts/report.py           # rewrite them (and redraw the figures)
    python scripts/report.py --check   # exit 1, showing the difference, when any text differs

Sources (all under ``docs/results/``):

- ``accuracy/cases.csv`` and ``accuracy/folds.csv`` (``scripts/accuracy_cv.py report``): per
  fold, case and class Dice, HD95 and NSD of each fold's last-epoch model; per fold the options
  fingerprint, wall time, machine, and the cores other jobs used meanwhile;
- ``study_<data>/{plan.json,results.csv,cases.csv,curves.csv}`` (``scripts/real_data_study.py``);
- ``demo/dice.csv`` (``medgraft demo``) and ``demo/runs.csv`` (``scripts/time_command.py``);
- ``bench/train.csv`` and ``bench/predict.csv`` (``scripts/bench_train.py``, ``bench_predict.py``);
- ``bench/gpu_*.csv`` (``scripts/bench_gpu.py``): the hippocampus fold trained on a GPU, its
  per-case scores, prediction and model-alone speeds;
- ``learning_speed.csv``, ``learning_speed_points.csv``, ``learning_speed_inference.csv`` (and
  ``learning_speed_discarded.csv``: the pace of runs thrown away)
  (``scripts/learning_speed.py score``): per method, CPU-minute point, case and class Dice, HD95
  and NSD; per snapshot the CPU minutes and iterations; per prediction call seconds per case.

Generated: the blocks between ``<!-- report:NAME -->`` and ``<!-- /report:NAME -->`` in
``README.md`` and ``docs/*.md`` (each name in one page; links made relative to that page),
``accuracy.md``, ``demo/README.md``, each study's ``summary.md`` and plots,
``learning_speed.md`` and ``learning_speed.png``, ``gpu.md``, and the ``measured:`` block that
ends each shipped recipe. Intervals are seeded bootstraps, so the same sources always give the
same text. Beside each figure a note says the commit its rows were measured at and how many later
commits changed the code that decides its numbers (``medgraft.lab.measured``: ``FIGURES``
declares each figure's rows and producing code); it reads only committed history, so a commit to
that code makes ``--check`` fail until the report is regenerated.
"""

from medgraft.lab.reports.blocks import main

if __name__ == "__main__":
    main()
