#!/usr/bin/env bash
# QM9 at an equal wall-clock budget (conf/experiment/qm9_10k.yaml: 10,000 / 1,000 / 10,000 molecules, one
# seeded split for every model), one run after the other on this machine, each with both cores.
# Run from the repository root:
#     bash experiments/qm9/budget_qm9.sh MINUTES TARGET [RUN ...]
# TARGET: gap (meV), U0 (U0_atom, extensive: a sum over atoms, meV) or mu (D).
# RUN: any of the names below (default: all, in this order); each model trains with its own learning rate,
#   the best of a 3-minute sweep on 5,000 molecules (experiments/qm9/results/lr_sweep.md):
#   eqgeo_conv_lmax1, eqgeo_conv_lmax2: eqgeo's convolution network (32 channels, 3 layers), lr 2e-2
#   eqgeo_conv_lmax2_mb: the same lmax-2 network with MACE-style body order (model.correlation=3), lr 2e-2
#   eqgeo_transformer: eqgeo's equivariant transformer (lmax 1), lr 2e-2 (TRANSFORMER_LR)
#   schnet, visnet: PyG's SchNet and ViSNet (their default sizes) through eqgeo's pipeline, lr 2e-3 each (VISNET_LR)
#   dimenetpp: PyG's DimeNet++ (the paper's QM9 size, 1.9 M weights) through eqgeo's pipeline (its neighbour list and
#     triplets: PyG's own forward needs pyg-lib and torch_sparse), lr 1e-3 (the paper's; DIMENET_LR)
#   eqgeo_conv_lmax1_scalar_mu (TARGET mu only): mu from a scalar readout instead of the dipole head
#   schnet_charges_mu (TARGET mu only): SchNet with PyG's dipole mode, mu = |sum_i q_i (r_i - r_cm)| from one charge
#     per atom, as SchNet's paper predicts it (not in the default list: added after the first mu runs)
# For mu, eqgeo's networks predict it with the dipole head (task.dipole=true), PyG's with a scalar readout
# (schnet_charges_mu: from charges).
# SEED=N (default: the config's seed, 0) trains other initial weights and batch orders on the same split
#   (seed=N data.seed=0); such runs are named <run>_seedN, beside the seed-0 runs in the same table.
# Runs go to runs/budget_qm9/<target>/<run>/, their metrics.json and config.yaml to
# experiments/qm9/results/budget_qm9/<target>/<run>/, the table to experiments/qm9/results/budget_qm9_<target>.md.
set -euo pipefail
source experiments/results.sh
minutes=${1:?minutes}
target=${2:?target: gap, U0 or mu}
shift 2
all="eqgeo_conv_lmax1 eqgeo_conv_lmax2 eqgeo_conv_lmax2_mb eqgeo_transformer schnet visnet dimenetpp"
case $target in
  gap) task="task.targets=[gap]" ;;
  U0) task="task.targets=[U0_atom] task.reduce=sum" ;;
  mu) task="task.targets=[mu] task.dipole=true"; all="$all eqgeo_conv_lmax1_scalar_mu"
      scalar_mu="task.dipole=false" ;;  # PyG's networks have no dipole head: they read mu out as a scalar
  *) echo "unknown target $target (gap, U0 or mu)" >&2; exit 2 ;;
esac
selected=${*:-$all}
seed_args=""
suffix=""
if [ -n "${SEED:-}" ]; then
  [[ $SEED =~ ^[0-9]+$ ]] || { echo "SEED must be a non-negative integer, got '$SEED'" >&2; exit 2; }
  seed_args="seed=$SEED data.seed=0"  # the split stays the seed-0 one: only weights and batch order change
  suffix="_seed$SEED"
fi
runs=runs/budget_qm9/$target
results=experiments/qm9/results/budget_qm9/$target
budget="experiment=qm9_10k trainer.max_time=00:00:$(printf %02d "$minutes"):00 trainer.enable_progress_bar=false"
size="model.channels=32 model.num_layers=3"
declare -A models=(
  [eqgeo_conv_lmax1]="$size model.lmax=1 task.lr=2e-2"
  [eqgeo_conv_lmax2]="$size model.lmax=2 task.lr=2e-2"
  [eqgeo_conv_lmax2_mb]="$size model.lmax=2 model.correlation=3 task.lr=2e-2"
  [eqgeo_transformer]="model=transformer $size model.lmax=1 task.lr=${TRANSFORMER_LR:-2e-2}"
  [schnet]="model=schnet task.lr=2e-3 ${scalar_mu:-}"
  [visnet]="model=visnet task.lr=${VISNET_LR:-2e-3} ${scalar_mu:-}"
  [dimenetpp]="model=dimenetpp task.lr=${DIMENET_LR:-1e-3} ${scalar_mu:-}"
  [eqgeo_conv_lmax1_scalar_mu]="$size model.lmax=1 task.lr=2e-2 ${scalar_mu:-}"
  [schnet_charges_mu]="model=schnet task.lr=2e-3"
)
for run in $selected; do  # every name checked before the first run starts
  [ -n "${models[$run]+x}" ] || { echo "unknown run $run (one of: $all)" >&2; exit 2; }
  if [[ $run == *_mu && $target != mu ]]; then echo "run $run is for TARGET mu only" >&2; exit 2; fi
done
for run in $selected; do
  name=$run$suffix
  rm -rf "$runs/$name"
  echo "== $target $name: start $(date -u +%H:%M) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
  if ! eqgeo-train $budget $task ${models[$run]} $seed_args hydra.run.dir="$runs/$name"; then
    echo "== $target $name: FAILED (its results are not updated); going on with the next run" >&2
    continue
  fi
  keep_results "$runs/$name" "$results/$name"
  echo "== $target $name: end $(date -u +%H:%M) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
done
{
  echo "# QM9 $target at an equal wall-clock budget ($minutes minutes)"
  echo
  echo "Command: \`${SEED:+SEED=$SEED }bash experiments/qm9/budget_qm9.sh $minutes $target\` at commit $(git rev-parse --short HEAD)."
  echo "Machine: $(nproc --all) CPU cores ($(lscpu | sed -n 's/^Model name: *//p')), one run after the other."
  echo
  eqgeo-leaderboard $results | sed '1,2d'
} > experiments/qm9/results/budget_qm9_$target.md
