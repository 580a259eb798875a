#!/usr/bin/env bash
# The rMD17 recipe (conf/experiment/rmd17.yaml) against the settings it replaced, at NequIP's ethanol
# configuration (3 layers, lmax 1, 32 channels, both parities, r 5 Å, batch 5), equal epochs, one run
# after the other on this machine. Run from the repository root:
#     bash experiments/md/recipe_rmd17.sh [EPOCHS]     # default 60 epochs per run
# Runs go to runs/recipe_rmd17/<variant>/; their metrics.json and config.yaml are copied to
# experiments/md/results/recipe_rmd17/<variant>/ and tabulated in experiments/md/results/recipe_rmd17.md.
set -euo pipefail
source experiments/results.sh
epochs=${1:-60}
model="model.channels=32 model.lmax=1 model.num_layers=3 model.parity=full"
common="experiment=rmd17 $model trainer.max_epochs=$epochs trainer.enable_progress_bar=false"
declare -A variants=(
  # the recipe: isolated-atom shifts, lr 0.01, cosine, stage two from 3/4 of the epochs, EMA
  [recipe]=""
  # the recipe without isolated atoms: the same shift for every species (the mean energy per atom)
  [recipe_no_isolated_atoms]="data.isolated_atoms=null"
  # the schedule and weights it replaced: lr 5e-3, plateau (patience 50), one stage (isolated-atom shifts kept)
  [previous_schedule]="task.lr=5e-3 task.lr_schedule=plateau task.warmup_epochs=0 task.stage_two_epoch=null trainer.early_stopping_patience=50"
)
for name in recipe previous_schedule recipe_no_isolated_atoms; do
  eqgeo-train $common ${variants[$name]} hydra.run.dir=runs/recipe_rmd17/$name
  keep_results runs/recipe_rmd17/$name experiments/md/results/recipe_rmd17/$name
done
out=experiments/md/results/recipe_rmd17.md
{
  echo "# The rMD17 recipe against the settings it replaced"
  echo
  echo "Command: \`bash experiments/md/recipe_rmd17.sh $epochs\` at commit $(git rev-parse --short HEAD)."
  echo "Machine: $(nproc --all) CPU cores ($(lscpu | sed -n 's/^Model name: *//p')), runs one after the other;"
  echo "load average when the last run ended: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  eqgeo-leaderboard experiments/md/results/recipe_rmd17 | sed '1,2d'
} > "$out"
