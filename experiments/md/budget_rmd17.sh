#!/usr/bin/env bash
# rMD17 ethanol at an equal wall-clock budget: eqgeo (the experiment=rmd17 recipe at NequIP's ethanol size) and
# MACE (experiments/md/peer_mace_rmd17.py: its recipe scaled to the same size), one after the other on this
# machine, each with both cores (eqgeo's trainer.intra_op_threads=auto picks one thread at this batch size).
# Run from the repository root:
#     bash experiments/md/budget_rmd17.sh [MINUTES] [MACE_EPOCHS]     # default 20 minutes; MACE: 57 epochs
# eqgeo stops at trainer.max_time, its cosine and second stage planned over the epochs that fit (about 10 s
# each here); MACE has no time limit, so its epochs are chosen to fit (about 20.5 s each here) and its wall
# time is reported. Runs go to runs/budget_rmd17/; results to experiments/md/results/budget_rmd17(.md).
set -euo pipefail
minutes=${1:-20}
mace_epochs=${2:-$(( minutes * 60 * 95 / 100 / 20 ))}   # 57 for 20 minutes
eqgeo_epochs=$(( minutes * 11 / 2 ))   # about 10 s per epoch with validation: 110 for 20 minutes
runs=runs/budget_rmd17
results=experiments/md/results/budget_rmd17
eqgeo-train experiment=rmd17 model.channels=32 model.lmax=1 model.num_layers=3 model.parity=full \
  trainer.max_epochs=$eqgeo_epochs trainer.max_time=00:00:$(printf %02d "$minutes"):00 trainer.enable_progress_bar=false \
  hydra.run.dir=$runs/eqgeo_conv_lmax1
python experiments/md/peer_mace_rmd17.py --epochs "$mace_epochs" --threads 2 --out $runs/mace
mkdir -p $results/eqgeo_conv_lmax1 $results/mace
for f in metrics.json config.yaml; do  # Hydra's run folder is absolute: written relative to the repository
  sed "s#$PWD/##g" $runs/eqgeo_conv_lmax1/$f > $results/eqgeo_conv_lmax1/$f
done
cp $runs/mace/metrics.json $results/mace/
{
  echo "# rMD17 ethanol at an equal wall-clock budget ($minutes minutes)"
  echo
  echo "Command: \`bash experiments/md/budget_rmd17.sh $minutes $mace_epochs\` at commit $(git rev-parse --short HEAD)."
  echo "Machine: $(nproc) CPU cores ($(lscpu | sed -n 's/^Model name: *//p')), one run after the other."
  echo
  eqgeo-leaderboard $results | sed '1,2d'
} > $results.md
