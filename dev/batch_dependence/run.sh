#!/bin/bash
# The batch-dependence experiment of docs/batch_dependence, start to end: the LR search at
# 1x8 (bn, gn, frn; at 1x8 SyncBN is BN), extended one factor of 2 at a time (for all three
# norms, at most EXTEND_ROUNDS times) while some norm's choice sits at an edge of the set,
# each norm's choice appended to its leaf, then the grid (one sweep per seed, so every
# point has seed 0 before any has seed 1). Safe to restart: finished runs are skipped,
# diverged ones kept as results (a sweep's exit status 3), and a leaf already holding its
# choice is left as it is. Any other failure stops the script.
#
#   bash dev/batch_dependence/run.sh [OUT]     (from the repository root; OUT defaults to
#                                              output/batch_dependence_v2)
#
# It edits the leaves of configs/Shapes/batch_dependence/, so run it in a checkout kept
# for the experiment (e.g. `git worktree add ../frn-det-bd HEAD`), not in one you edit.
# PYTHON overrides the interpreter (default: python).
set -euo pipefail
OUT=${1:-output/batch_dependence_v2}
PY=${PYTHON:-python}
EXTEND_ROUNDS=${EXTEND_ROUNDS:-3}
LEAF='configs/Shapes/batch_dependence/mask_rcnn_R_18_FPN_{norm}.yaml'

# tools/sweep.py, where exit status 3 (the only unfinished runs diverged) goes on.
sweep() {
  local status=0
  "$PY" tools/sweep.py --configs "$LEAF" --total-batch 8 --progress-every 300 "$@" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 3 ]
}

search() {
  for lr in "$@"; do
    sweep --norms bn,gn,frn --ims-per-gpu 8 --output "$OUT/lr_search/lr$lr" SOLVER.BASE_LR "$lr"
  done
}

# Whether every searched leaf (and syncbn's) already holds the search's choice: the note
# frn_det_tools.lr_search writes beside it. Then the search is not run again (its run
# folders may be gone with an earlier machine; the committed leaves are its result).
leaves_hold_choice() {
  local norm
  for norm in bn gn frn syncbn; do
    grep -q "# the search's choice" "${LEAF/\{norm\}/$norm}" || return 1
  done
}

if leaves_hold_choice && [ "${SEARCH_AGAIN:-0}" != 1 ]; then
  echo "the leaves hold the search's choice: search skipped (SEARCH_AGAIN=1 runs it)"
else
  search 0.02 0.04 0.08
  for _ in $(seq "$EXTEND_ROUNDS"); do
    extra=$("$PY" -m frn_det_tools.lr_search "$OUT/lr_search" --extend)
    [ -n "$extra" ] || break
    # shellcheck disable=SC2086  # one word per LR
    search $extra
  done
  "$PY" -m frn_det_tools.lr_search "$OUT/lr_search" --write-leaves "$LEAF" --same-as syncbn=bn
fi
for seed in 0 1 2; do
  sweep --norms bn,syncbn,gn,gn_pa,frn,frn_pa --ims-per-gpu 8,4,2,1 --seed "$seed" \
    --output "$OUT/grid"
done
if [ -d "$OUT/lr_search" ]; then
  "$PY" tools/batch_dependence.py "$OUT/grid" --lr-search "$OUT/lr_search" --dest "$OUT/report"
else
  "$PY" tools/batch_dependence.py "$OUT/grid" --dest "$OUT/report"
fi
