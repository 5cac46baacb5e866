"""dev/batch_dependence/keep.sh: the settled runs archived and committed (those paths only),
nothing committed when nothing new settled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEEP = REPO / "dev" / "batch_dependence" / "keep.sh"


def _git(repo, *args):
    command = ["git", "-C", str(repo), *args]
    return subprocess.run(command, capture_output=True, text=True, check=True)


def test_keep_commits_the_settled_runs_once(tmp_path, fake_run):
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / "README.md").write_text("x\n")
    (repo / "mine.txt").write_text("staged but not the archive's\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-qm", "start")
    _git(repo, "add", "mine.txt")
    out = repo / "output" / "bd"
    done = fake_run(out / "grid", "bn", 8, 0, "done", box=41.0)
    fake_run(out / "lr_search" / "lr0.04", "gn", 8, 0, "done", box=30.0)
    fake_run(out / "grid", "gn", 8, 0, "unfinished", iteration=100)
    env = {**os.environ, "PERIOD": "0", "PYTHON": sys.executable}

    def keep():
        subprocess.run(["bash", str(KEEP), "output/bd"], cwd=repo, env=env, check=True)
        return _git(repo, "log", "--format=%s").stdout.splitlines()

    log = keep()
    assert len(log) == 2 and "grid/mask_rcnn_R_18_FPN/bn/ipg8/seed0" in log[0]
    files = _git(repo, "show", "--name-only", "--format=", "HEAD").stdout.split()
    kept = "docs/batch_dependence/runs/grid/mask_rcnn_R_18_FPN/bn/ipg8/seed0/"
    assert kept + "DONE.json" in files and kept + "CHECKPOINT.json" in files
    assert "lr_search/lr0.04/mask_rcnn_R_18_FPN/gn/ipg8/seed0" in log[0]
    searched = "docs/batch_dependence/runs/lr_search/lr0.04/mask_rcnn_R_18_FPN/gn/ipg8/seed0/"
    assert searched + "DONE.json" in files
    assert not any("/gn/" in f for f in files if "/grid/" in f) and "mine.txt" not in files
    assert keep() == log  # nothing new settled: no commit
    assert (done / "model_final.pth").is_file()  # the run's own folder is untouched
