#!/bin/bash
# Starts, or goes on with, the batch-dependence experiment on this machine. Run it from the
# root of the checkout that commits (a new machine included):
#
#   bash dev/batch_dependence/start.sh
#
# 1. .venv (make env); 2. the archive (docs/batch_dependence/runs) restored into OUT, so
# the sweep skips the runs it holds; 3. the worktree the experiment runs in (WORKTREE, at
# REV: the training code and leaves the runs use) created if missing; 4. the driver
# (run.sh) started there in the background, niced, unless one is running; 5. keep.sh
# beside it, which archives and commits each run that settles. Logs: OUT/run_all.log and
# output/keep.log. The runs' RUN.json name the worktree's absolute paths, so keep this
# checkout where it was (/work/main) for the restored runs to match the plan.
set -euo pipefail
REV=${REV:-25868a4}
OUT=$PWD/output/batch_dependence_v2
WORKTREE=$PWD/output/bd_src2
PY=$PWD/.venv/bin/python
ARCHIVE=docs/batch_dependence/runs

make env
for kept in "$ARCHIVE/grid" "$ARCHIVE"/lr_search/lr*; do
  if [ -d "$kept" ]; then
    "$PY" -m frn_det_tools.run_archive restore "$kept" "$OUT/${kept#"$ARCHIVE"/}" | head -1
  fi
done
[ -d "$WORKTREE" ] || git worktree add --detach "$WORKTREE" "$REV"
mkdir -p "$OUT"
if pgrep -f "dev/batch_dependence/run.sh" > /dev/null; then
  echo "the driver is running already"
else
  (cd "$WORKTREE" && PYTHONPATH=$WORKTREE PYTHON=$PY nohup setsid nice -n 19 \
    bash dev/batch_dependence/run.sh "$OUT" >> "$OUT/run_all.log" 2>&1 &)
  echo "driver started in $WORKTREE; log: $OUT/run_all.log"
fi
if pgrep -f "dev/batch_dependence/keep.sh" > /dev/null; then
  echo "keep.sh is running already"
else
  (PYTHON=$PY nohup setsid bash dev/batch_dependence/keep.sh > output/keep.log 2>&1 &)
  echo "keep.sh started; log: output/keep.log"
fi
