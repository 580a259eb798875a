#!/usr/bin/env bash
# The data-efficiency figure: eqgeo's convolution network at lmax 0, 1 and 2 (otherwise NequIP's ethanol size:
# 3 layers, 32 channels, both parities) trained on 50, 100, 200, 400 and 950 rMD17 ethanol frames with the
# experiment=rmd17 recipe, each for MINUTES of wall-clock time (default 8; the cosine and the second stage are
# planned for the epochs that fit), validated on 50 frames outside the training subset, tested on all 1000
# frames of test_MD.xyz. One run after the other on this machine. Run from the repository root:
#     bash experiments/md/learning_curve_rmd17.sh [MINUTES] [LMAX ...]
# Runs go to runs/learning_curve_rmd17/lmax<L>_n<N>/, their metrics.json and config.yaml to
# experiments/md/results/learning_curve_rmd17/, the figure and the fitted slopes to
# experiments/md/results/learning_curve_rmd17.{png,md} (experiments/md/plot_learning_curve.py).
set -euo pipefail
source experiments/results.sh
minutes=${1:-8}
shift || true
lmaxes=${*:-0 1 2}
runs=runs/learning_curve_rmd17
results=experiments/md/results/learning_curve_rmd17
for lmax in $lmaxes; do
  for n in 50 100 200 400 950; do
    run=lmax${lmax}_n${n}
    rm -rf "$runs/$run"
    echo "== $run: start $(date -u +%H:%M) UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
    if ! eqgeo-train experiment=rmd17 model.channels=32 model.num_layers=3 model.parity=full model.lmax=$lmax \
        data.num_train=$n trainer.max_epochs=100000 trainer.max_time=00:00:$(printf %02d "$minutes"):00 \
        trainer.enable_progress_bar=false hydra.run.dir="$runs/$run"; then
      echo "== $run: FAILED; going on with the next run" >&2
      continue
    fi
    keep_results "$runs/$run" "$results/$run"
  done
done
python experiments/md/plot_learning_curve.py "$results" --minutes "$minutes"
