# Shell helpers of the experiment scripts (sourced: `source experiments/results.sh`, from the repository root).

# keep_results RUN_DIR RESULT_DIR: copies a finished run's metrics.json and config.yaml (those it has) into
# RESULT_DIR, the paths in them written relative to the repository (Hydra's run folder is absolute; the shared
# data folder beside the repository becomes ../).
keep_results() {
  mkdir -p "$2"
  local f
  for f in metrics.json config.yaml; do
    [ -f "$1/$f" ] && sed -e "s#$PWD/##g" -e "s#$(dirname "$PWD")/#../#g" "$1/$f" > "$2/$f"
  done
  return 0
}
