#!/usr/bin/env bash
# rMD17 ethanol (or 3BPA) at an equal wall-clock budget, one run after the other on this machine, each with both
# cores. Run from the repository root:
#     [DATASET=3bpa] bash experiments/md/budget_rmd17.sh [MINUTES] [RUN ...]
# DATASET: rmd17 (default: ethanol, 950 / 50 of train.xyz, all 1000 of test_MD.xyz) or 3bpa (400 / 50 / 50 of
#   train_300K.xyz, conf/data/3bpa.yaml; the peers get the same frames, peer_mace_rmd17.peer_data).
# MINUTES: the budget of each run (default 20). RUN: any of the names below (default: all, in this order).
#   eqgeo_conv_lmax1, eqgeo_conv_lmax2, eqgeo_transformer: the experiment=$DATASET recipe at NequIP's ethanol size
#       (3 layers, 32 channels, both parities, r 5 Å, batch 5), stopped by trainer.max_time; the cosine and the
#       second stage are planned for the epochs that fit the budget at the pace so far (eqgeo.training.tasks).
#   eqgeo_conv_lmax1_mb, eqgeo_conv_lmax2_mb: the same with a degree-3 many-body product after each layer
#       (model.correlation=3, eqgeo.nn.ManyBodyProduct: MACE's body order); not in the default list.
#   eqgeo_conv_lmax1_mb_natural, eqgeo_conv_lmax2_mb_natural: the same with one parity per degree (0e+1o+2e, as
#       MACE's hidden features): at lmax 2, 11 product paths against 60 with both parities; not in the default list.
#   visnet: PyG's ViSNet (its defaults, conf/model/visnet.yaml) through eqgeo's pipeline, the same recipe at lr 1e-3
#       (at the recipe's 0.01 its weights became NaN within the first epoch).
#   mace: experiments/md/peer_mace_rmd17.py (MACE 0.3.16's own CLI, its recipe at the same size).
#   nequip: experiments/md/peer_nequip_rmd17.py (NequIP 0.19.1's own CLI, its recipe at the same size).
# MACE and NequIP have no time limit: their epochs are chosen to fit the budget (MACE_EPOCHS, NEQUIP_EPOCHS in
# the environment; defaults from their measured pace here, per epoch: rMD17 about 20 s and 10 s, 3BPA 24 s and
# 7.5 s) and their wall time is reported beside the others. Runs go to runs/budget_$DATASET/<run>/, their
# metrics.json and config to experiments/md/results/budget_$DATASET/<run>/, the table to
# experiments/md/results/budget_$DATASET.md.
# EPOCHS=N (in the environment): equal epochs instead of an equal budget: every model trains N epochs, eqgeo's
#   with trainer.max_epochs=N and no time limit (its cosine and second stage planned for N epochs, as MACE's
#   --max_num_epochs and its SWA stage from 3/4 are), MACE and NequIP with N; MINUTES is then ignored. Runs go to
#   runs/epochs${N}_$DATASET/, results to experiments/md/results/epochs${N}_$DATASET[/ and .md].
# PEER_THREADS=N (in the environment; default 2): MACE's and NequIP's torch threads. At equal epochs their results
#   do not depend on it; one thread keeps them from stalling beside another run (MACE on 2 threads beside a
#   single-thread MD run took 12 minutes for one rMD17 epoch that takes 20 s alone).
set -euo pipefail
source experiments/results.sh
minutes=${1:-20}
shift || true
all="eqgeo_conv_lmax1 eqgeo_conv_lmax2 eqgeo_transformer visnet mace nequip"
selected=${*:-$all}
dataset=${DATASET:-rmd17}
peer_threads=${PEER_THREADS:-2}
case $dataset in
  rmd17) peer_dataset=rmd17_ethanol title="rMD17 ethanol" mace_pace=200 nequip_pace=100 ;;  # paces in 0.1 s
  3bpa) peer_dataset=3bpa title="3BPA (300 K, 400 training frames)" mace_pace=240 nequip_pace=75 ;;
  *) echo "DATASET is rmd17 or 3bpa, not $dataset" >&2; exit 2 ;;
esac
size="model.channels=32 model.num_layers=3 model.parity=full"
if [ -n "${EPOCHS:-}" ]; then
  mace_epochs=$EPOCHS nequip_epochs=$EPOCHS
  runs=runs/epochs${EPOCHS}_$dataset
  results=experiments/md/results/epochs${EPOCHS}_$dataset
  budget="trainer.max_epochs=$EPOCHS trainer.max_time=null trainer.enable_progress_bar=false"
  heading="$title at equal epochs ($EPOCHS per model)"
  command_line="EPOCHS=$EPOCHS DATASET=$dataset bash experiments/md/budget_rmd17.sh"
else
  mace_epochs=${MACE_EPOCHS:-$(( minutes * 600 * 95 / 100 / mace_pace ))}
  nequip_epochs=${NEQUIP_EPOCHS:-$(( minutes * 600 * 95 / 100 / nequip_pace ))}
  runs=runs/budget_$dataset
  results=experiments/md/results/budget_$dataset
  budget="trainer.max_epochs=1000 trainer.max_time=00:00:$(printf %02d "$minutes"):00 trainer.enable_progress_bar=false"
  heading="$title at an equal wall-clock budget ($minutes minutes)"
  command_line="DATASET=$dataset bash experiments/md/budget_rmd17.sh $minutes"
fi
declare -A eqgeo_runs=(
  [eqgeo_conv_lmax1]="$size model.lmax=1"
  [eqgeo_conv_lmax2]="$size model.lmax=2"
  [eqgeo_transformer]="model=transformer $size model.lmax=1"
  [eqgeo_conv_lmax1_mb]="$size model.lmax=1 model.correlation=3"
  [eqgeo_conv_lmax2_mb]="$size model.lmax=2 model.correlation=3"
  [eqgeo_conv_lmax1_mb_natural]="${size/parity=full/parity=natural} model.lmax=1 model.correlation=3"
  [eqgeo_conv_lmax2_mb_natural]="${size/parity=full/parity=natural} model.lmax=2 model.correlation=3"
  [visnet]="model=visnet task.lr=1e-3"
)
for run in $selected; do
  rm -rf "$runs/$run"
  echo "== $run: start $(date -u +%H:%M) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
  case $run in
    mace) command=(python experiments/md/peer_mace_rmd17.py --dataset $peer_dataset --epochs "$mace_epochs" --threads "$peer_threads"
                   --out "$runs/$run") ;;
    nequip) command=(python experiments/md/peer_nequip_rmd17.py --dataset $peer_dataset --epochs "$nequip_epochs"
                     --threads "$peer_threads" --out "$runs/$run") ;;
    *) [ -n "${eqgeo_runs[$run]+x}" ] || { echo "unknown run $run (one of: $all)" >&2; exit 2; }
       command=(eqgeo-train experiment=$dataset ${eqgeo_runs[$run]} $budget hydra.run.dir="$runs/$run") ;;
  esac
  if ! "${command[@]}"; then
    echo "== $run: FAILED (its results are not updated); going on with the next run" >&2
    continue
  fi
  keep_results "$runs/$run" "$results/$run"
  echo "== $run: end $(date -u +%H:%M) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
done
{
  echo "# $heading"
  echo
  echo "Command: \`$command_line\` (MACE $mace_epochs epochs, NequIP $nequip_epochs) at commit $(git rev-parse --short HEAD)."
  echo "Machine: $(nproc --all) CPU cores ($(lscpu | sed -n 's/^Model name: *//p')), one run after the other."
  echo
  eqgeo-leaderboard $results | sed '1,2d'
} > $results.md
