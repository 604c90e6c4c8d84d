#!/usr/bin/env bash
# nnU-Net v2 (3d_fullres) on the same MSD Hippocampus folds as `scripts/accuracy_cv.py`, for a
# side-by-side with the mri-2.5d recipe at a comparable CPU budget.
#
#   bash scripts/compare_nnunet.sh [EPOCHS_TRAINER] [FOLDS]
#   bash scripts/compare_nnunet.sh measure [ITERATIONS]
#     measure: time ITERATIONS (default 20) training iterations of the default nnU-Net trainer
#              on fold 0 and print seconds per iteration and per 250-iteration epoch, to size
#              the budget before committing hours to it
#     EPOCHS_TRAINER: an nnU-Net trainer class, default nnUNetTrainer_5epochs (the budget knob:
#                     pick the variant whose wall time per fold matches medgraft's, see below)
#     FOLDS:          space-separated fold numbers, default "0 1 2 3 4"
#
# Needs: runs/accuracy/hippocampus/splits.json (from `accuracy_cv.py train --dataset
# hippocampus`), and nnunetv2 in its own virtual environment (it pins its own dependencies):
#   python3 -m venv .venv-nnunet && .venv-nnunet/bin/pip install torch nnunetv2
# Writes runs/nnunet/ (raw, preprocessed, results, predictions) and
# docs/results/nnunet_hippocampus.csv (per fold and class: Dice and HD95 from `medgraft evaluate`)
# and the wall time of each step to runs/nnunet/timing.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

TRAINER=${1:-nnUNetTrainer_5epochs}
FOLDS=${2:-"0 1 2 3 4"}
NNUNET_BIN=${NNUNET_BIN:-.venv-nnunet/bin}
SHARED_HIPPOCAMPUS=${SHARED_HIPPOCAMPUS:-../shared/data/hippocampus}
SPLITS=runs/accuracy/hippocampus/splits.json
WORK=$PWD/runs/nnunet
DATASET=Dataset004_Hippocampus

export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-2}   # augmentation workers: this machine has 2 cores

[[ -f $SPLITS ]] || { echo "error: $SPLITS missing; run scripts/accuracy_cv.py first" >&2; exit 1; }
[[ -x $NNUNET_BIN/nnUNetv2_train ]] || { echo "error: nnunetv2 not found in $NNUNET_BIN" >&2; exit 1; }
mkdir -p "$WORK"
timed() {  # timed LABEL COMMAND...: run it and append its wall time to timing.tsv
  local label=$1 start; shift; start=$(date +%s)
  "$@"
  printf '%s\t%s\t%s\n' "$label" "$(( $(date +%s) - start ))" "$(nproc) cores" >> "$WORK/timing.tsv"
}

# 1. nnU-Net raw layout. Images are linked; labels are rewritten because hippocampus_243 holds
#    one voxel of value -2, which both nnU-Net and medgraft refuse; it becomes background, as
#    medgraft's --stray-labels-to-background does in the recipe run.
.venv/bin/python - "$SHARED_HIPPOCAMPUS" "$nnUNet_raw/$DATASET" <<'PY'
import json, sys
from pathlib import Path
import nibabel as nib
import numpy as np

source, target = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
manifest = json.loads((source / "dataset.json").read_text())
(target / "imagesTr").mkdir(parents=True, exist_ok=True)
(target / "labelsTr").mkdir(parents=True, exist_ok=True)
for entry in manifest["training"]:
    case = Path(entry["image"]).name.removesuffix(".nii.gz")
    link = target / "imagesTr" / f"{case}_0000.nii.gz"
    if not link.exists():
        link.symlink_to(source / entry["image"])
    label_path = target / "labelsTr" / f"{case}.nii.gz"
    if not label_path.exists():
        label = nib.load(source / entry["label"])
        values = np.asarray(label.dataobj).astype(np.int16)
        values[(values < 0) | (values > 2)] = 0
        nib.save(nib.Nifti1Image(values, label.affine, label.header), label_path)
(target / "dataset.json").write_text(json.dumps({
    "channel_names": {"0": "MRI"},
    "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
    "numTraining": len(manifest["training"]),
    "file_ending": ".nii.gz",
}, indent=1))
PY

# 2. plan and preprocess (once), then impose medgraft's folds as nnU-Net's splits_final.json
if [[ ! -d $nnUNet_preprocessed/$DATASET/nnUNetPlans_3d_fullres ]]; then
  timed preprocess "$NNUNET_BIN/nnUNetv2_plan_and_preprocess" -d 4 -c 3d_fullres -np 2 \
    --verify_dataset_integrity
fi
.venv/bin/python -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['folds'], open(sys.argv[2], 'w'))" \
  "$SPLITS" "$nnUNet_preprocessed/$DATASET/splits_final.json"

if [[ $TRAINER == measure ]]; then
  iterations=${2:-20}
  timed "measure $iterations iterations" "$NNUNET_BIN/python" - "$iterations" <<'PY'
import sys, time
import torch
from nnunetv2.run.run_training import get_trainer_from_args

iterations = int(sys.argv[1])
torch.set_num_threads(torch.get_num_threads())
trainer = get_trainer_from_args("4", "3d_fullres", 0, "nnUNetTrainer", "nnUNetPlans",
                                device=torch.device("cpu"))
trainer.num_epochs, trainer.num_val_iterations_per_epoch = 1, 1
trainer.num_iterations_per_epoch = 3
trainer.on_train_start()  # data loaders, network; then 3 warm-up iterations
trainer.network.train()
for _ in range(3):
    trainer.train_step(next(trainer.dataloader_train))
started = time.perf_counter()
for _ in range(iterations):
    trainer.train_step(next(trainer.dataloader_train))
per_iteration = (time.perf_counter() - started) / iterations
print(f"nnU-Net 3d_fullres on the CPU: {per_iteration:.2f} s per training iteration "
      f"(batch {trainer.configuration_manager.batch_size}, patch "
      f"{trainer.configuration_manager.patch_size}); a 250-iteration epoch: "
      f"{250 * per_iteration / 60:.1f} min; the default 1000 epochs: "
      f"{1000 * 250 * per_iteration / 3600:.0f} h per fold")
trainer.on_train_end()
PY
  exit 0
fi

# 3. train and predict each fold's validation cases; 4. score them with medgraft evaluate
mkdir -p docs/results
for fold in $FOLDS; do
  result=$nnUNet_results/$DATASET/${TRAINER}__nnUNetPlans__3d_fullres/fold_$fold
  if [[ ! -f $result/checkpoint_final.pth ]]; then
    resume=(); [[ -f $result/checkpoint_latest.pth ]] && resume=(--c)
    timed "train fold $fold ($TRAINER)" "$NNUNET_BIN/nnUNetv2_train" 4 3d_fullres "$fold" \
      -tr "$TRAINER" -device cpu "${resume[@]}"
  fi
  inputs=$WORK/val_fold_$fold; predictions=$WORK/predictions_fold_$fold
  mkdir -p "$inputs"
  for case in $(.venv/bin/python -c "import json,sys; print(*json.load(open(sys.argv[1]))['folds'][int(sys.argv[2])]['val'])" "$SPLITS" "$fold"); do
    ln -sf "$nnUNet_raw/$DATASET/imagesTr/${case}_0000.nii.gz" "$inputs/"
  done
  timed "predict fold $fold" "$NNUNET_BIN/nnUNetv2_predict" -i "$inputs" -o "$predictions" \
    -d 4 -c 3d_fullres -f "$fold" -tr "$TRAINER" -device cpu --disable_tta
  .venv/bin/medgraft evaluate --pred "$predictions" --truth "$nnUNet_raw/$DATASET/labelsTr" \
    --labels "$nnUNet_raw/$DATASET/dataset.json" --output "$WORK/eval_fold_$fold.csv"
done
.venv/bin/python - "$WORK" "$TRAINER" <<'PY'
import csv, sys
from pathlib import Path
work, trainer = Path(sys.argv[1]), sys.argv[2]
rows = []
for path in sorted(work.glob("eval_fold_*.csv")):
    fold = path.stem.rsplit("_", 1)[1]
    for row in csv.DictReader(path.open()):
        if row["case_id"] in {"MEAN", "STD"}:
            continue
        rows.append({"trainer": trainer, "fold": fold, **row})
with open("docs/results/nnunet_hippocampus.csv", "w", newline="") as handle:
    writer = csv.DictWriter(handle, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
print(f"wrote docs/results/nnunet_hippocampus.csv ({len(rows)} rows); timings in {work}/timing.tsv")
PY
