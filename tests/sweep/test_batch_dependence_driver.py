"""dev/batch_dependence/run.sh's control flow, with PYTHON a stand-in that records each
command: the search extended while a choice sits at an edge (bounded), a sweep's exit
status 3 (only diverged runs unfinished) going on, any other failure stopping it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "dev" / "batch_dependence" / "run.sh"

# Records argv, answers `-m frn_det_tools.lr_search ... --extend` with the next line of
# extend.txt (nothing once it runs out), and exits a sweep with the status that
# statuses.json gives the first of its keys found in the command line (else 0).
STAND_IN = """\
import json, os, sys
from pathlib import Path
here = Path(os.environ["STAND_IN_DIR"])
with open(here / "calls.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["-m", "frn_det_tools.lr_search"] and "--extend" in sys.argv:
    answers = (here / "extend.txt").read_text().splitlines()
    if answers:
        print(answers[0])
        (here / "extend.txt").write_text("".join(a + "\\n" for a in answers[1:]))
    raise SystemExit(0)
if sys.argv[1:2] == ["tools/sweep.py"]:
    line = " ".join(sys.argv)
    statuses = json.loads((here / "statuses.json").read_text())
    raise SystemExit(next((s for k, s in statuses.items() if k in line), 0))
"""


def _drive(tmp_path, extend=(), statuses=None, rounds=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "python").write_text(f"#!{sys.executable}\n{STAND_IN}")
    (tmp_path / "python").chmod(0o755)
    (tmp_path / "extend.txt").write_text("".join(f"{line}\n" for line in extend))
    (tmp_path / "statuses.json").write_text(json.dumps(statuses or {}))
    env = {**os.environ, "PYTHON": str(tmp_path / "python"), "STAND_IN_DIR": str(tmp_path)}
    if rounds is not None:
        env["EXTEND_ROUNDS"] = str(rounds)
    done = subprocess.run(
        ["bash", str(DRIVER), str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True
    )
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    return done.returncode, calls


def _searched(calls):
    return [c[c.index("SOLVER.BASE_LR") + 1] for c in calls if "SOLVER.BASE_LR" in c]


def _grid_seeds(calls):
    return [c[c.index("--seed") + 1] for c in calls if "--seed" in c]


def test_the_search_extends_while_a_choice_is_at_an_edge_then_writes_leaves_and_runs_the_grid(
    tmp_path,
):
    status, calls = _drive(tmp_path, extend=["0.16", "0.32"])
    assert status == 0
    assert _searched(calls) == ["0.02", "0.04", "0.08", "0.16", "0.32"]
    steps = [c[3] for c in calls if c[:2] == ["-m", "frn_det_tools.lr_search"]]
    assert steps == ["--extend"] * 3 + ["--write-leaves"]
    assert _grid_seeds(calls) == ["0", "1", "2"]
    grid = next(c for c in calls if "--seed" in c)
    assert grid[grid.index("--norms") + 1] == "bn,syncbn,gn,gn_pa,frn,frn_pa"
    assert grid[grid.index("--ims-per-gpu") + 1] == "8,4,2,1"
    assert grid[grid.index("--total-batch") + 1] == "8"
    assert calls[-1][0] == "tools/batch_dependence.py"


def test_the_extension_stops_after_its_rounds(tmp_path):
    status, calls = _drive(tmp_path, extend=["0.16", "0.32", "0.64"], rounds=2)
    assert status == 0
    assert _searched(calls) == ["0.02", "0.04", "0.08", "0.16", "0.32"]


def test_diverged_runs_go_on_and_a_failed_run_stops_the_driver(tmp_path):
    status, calls = _drive(tmp_path / "a", statuses={"lr0.08": 3, "--seed 1": 3})
    assert status == 0 and _grid_seeds(calls) == ["0", "1", "2"]
    status, calls = _drive(tmp_path / "b", statuses={"--seed 1": 1})
    assert status != 0
    assert _grid_seeds(calls) == ["0", "1"] and calls[-1][0] == "tools/sweep.py"
    status, calls = _drive(tmp_path / "c", statuses={"lr0.04": 1})
    assert status != 0 and _searched(calls) == ["0.02", "0.04"]
