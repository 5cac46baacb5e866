"""dev/batch_dependence/run.sh's control flow, with PYTHON a stand-in that records each
command: the search extended while a choice sits at an edge (bounded), skipped when the
leaves already hold its choice, a sweep's exit status 3 (only diverged runs unfinished)
going on, any other failure stopping it. The driver runs in a scratch folder holding a
copy of the experiment's leaves, so whether they hold a choice is the test's to set."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "dev" / "batch_dependence" / "run.sh"
LEAVES = Path("configs") / "Shapes" / "batch_dependence"
SEARCHED = ("bn", "gn", "frn", "syncbn")

# Records argv, answers `-m frn_det_tools.lr_search ... --extend` with the next line of
# extend.txt (nothing once it runs out), makes a sweep's --output folder and exits it
# with the status that
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
    Path(sys.argv[sys.argv.index("--output") + 1]).mkdir(parents=True, exist_ok=True)
    line = " ".join(sys.argv)
    statuses = json.loads((here / "statuses.json").read_text())
    raise SystemExit(next((s for k, s in statuses.items() if k in line), 0))
"""


def _checkout(root, chosen):
    """A folder with the experiment's leaves, each holding the search's choice (its BASE_LR
    line and note) when its norm is in ``chosen``, none otherwise."""
    (root / LEAVES).mkdir(parents=True)
    for norm in SEARCHED:
        text = (REPO / LEAVES / f"mask_rcnn_R_18_FPN_{norm}.yaml").read_text()
        if norm not in chosen:
            text = re.sub(r"(?m)^SOLVER:\n  BASE_LR: .*# the search's choice.*\n", "", text)
            assert "search's choice" not in text
        (root / LEAVES / f"mask_rcnn_R_18_FPN_{norm}.yaml").write_text(text)
    return root


def _drive(tmp_path, extend=(), statuses=None, rounds=None, chosen=(), env_extra=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "python").write_text(f"#!{sys.executable}\n{STAND_IN}")
    (tmp_path / "python").chmod(0o755)
    (tmp_path / "extend.txt").write_text("".join(f"{line}\n" for line in extend))
    (tmp_path / "statuses.json").write_text(json.dumps(statuses or {}))
    env = {**os.environ, "PYTHON": str(tmp_path / "python"), "STAND_IN_DIR": str(tmp_path)}
    env.update(env_extra or {})
    if rounds is not None:
        env["EXTEND_ROUNDS"] = str(rounds)
    cwd = _checkout(tmp_path / "checkout", chosen)
    done = subprocess.run(
        ["bash", str(DRIVER), str(tmp_path / "out")], cwd=cwd, env=env, capture_output=True
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
    assert calls[-1][calls[-1].index("--lr-search") + 1] == str(tmp_path / "out" / "lr_search")


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


def test_leaves_holding_the_choice_skip_the_search_unless_asked_to_search_again(tmp_path):
    status, calls = _drive(tmp_path / "a", extend=["0.16"], chosen=SEARCHED)
    assert status == 0
    assert _searched(calls) == []
    assert not any(c[:2] == ["-m", "frn_det_tools.lr_search"] for c in calls)
    assert _grid_seeds(calls) == ["0", "1", "2"]
    # no search folder: the report is written without one
    assert calls[-1][0] == "tools/batch_dependence.py" and "--lr-search" not in calls[-1]
    status, calls = _drive(
        tmp_path / "b", chosen=SEARCHED, env_extra={"SEARCH_AGAIN": "1"}
    )
    assert status == 0 and _searched(calls) == ["0.02", "0.04", "0.08"]
    # one leaf without its choice: the search runs
    status, calls = _drive(tmp_path / "c", chosen=("bn", "gn", "frn"))
    assert status == 0 and _searched(calls) == ["0.02", "0.04", "0.08"]
