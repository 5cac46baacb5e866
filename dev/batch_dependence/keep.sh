#!/bin/bash
# Keeps the batch-dependence experiment's finished runs in the repository while it runs:
# every PERIOD seconds (default 300), frn_det_tools.run_archive saves the settled runs of
# OUT/grid and OUT/lr_search/lr*/ into docs/batch_dependence/runs/, and what it added is
# committed (those paths only). A machine's output/ does not outlive it; commits do.
#
#   bash dev/batch_dependence/keep.sh [OUT]   (from the checkout you commit in; OUT
#                                             defaults to output/batch_dependence_v2)
#
# On a new machine, first put the archive back so the sweep skips those runs:
#   python -m frn_det_tools.run_archive restore docs/batch_dependence/runs/grid OUT/grid
set -uo pipefail
OUT=${1:-output/batch_dependence_v2}
ARCHIVE=docs/batch_dependence/runs
PERIOD=${PERIOD:-300}
PY=${PYTHON:-.venv/bin/python}

while true; do
  saved=()
  # The grid, and the search's sweeps (one per LR) where they exist.
  for source in "$OUT/grid" "$OUT"/lr_search/lr*; do
    [ -d "$source" ] || continue
    part=${source#"$OUT"/}
    while IFS= read -r line; do
      saved+=("$part/${line#  saved: }")
    done < <("$PY" -m frn_det_tools.run_archive save "$source" "$ARCHIVE/$part" | grep '^  saved: ')
  done
  if [ "${#saved[@]}" -gt 0 ]; then
    # Another git command of the session may hold the index for a moment: try again.
    for _ in 1 2 3 4 5; do
      git add -- "$ARCHIVE" && git commit -q -m "docs/batch_dependence/runs: archive ${saved[*]}" -- "$ARCHIVE" && break
      sleep 5
    done
  fi
  [ "$PERIOD" -gt 0 ] || break
  sleep "$PERIOD"
done
