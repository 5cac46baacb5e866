"""tools/sweep.py --launcher slurm on a real Slurm: the tiny 2-run sweep submitted as jobs,
one of them signalled as Slurm signals a job before its time limit (``scancel --signal
USR2``, what submitit's own tests do) once it has a checkpoint: requeued by Slurm, it
resumes from that checkpoint; a third run fails and the summary says so with its log.

Runs only under ``make slurm-check`` (FRN_DET_SLURM_CHECK=1), which starts a single-node
Slurm (dev/slurm/start.sh) and stops it afterwards; minutes long (Slurm holds a requeued
job back for two minutes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

if os.environ.get("FRN_DET_SLURM_CHECK") != "1":
    pytest.skip("needs a Slurm cluster: make slurm-check", allow_module_level=True)

from frn_det_tools.slurm import job_statuses  # noqa: E402
from frn_det_tools.summarize import summarize  # noqa: E402
from frn_det_tools.sweep import main, read_state  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHAPES_TEMPLATE = os.fspath(REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_{norm}.yaml")
STEM = "mask_rcnn_R_18_FPN"
JOB_FLAGS = ["--launcher", "slurm", "--gpus-per-node", "0", "--cpus-per-task", "1"]
JOB_FLAGS += ["--timeout-min", "20", "--partition", "debug"]


def _show(capsys: pytest.CaptureFixture[str], title: str, text: str) -> None:
    # Straight to make slurm-check's output: what the sweep and its summaries said.
    with capsys.disabled():
        print(f"\n--- {title}\n{text.strip()}", flush=True)


def _until(what: str, check, timeout: float = 900.0, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _cell(table: str, norm: str) -> str:
    """The text of the summary table's first cell after ``norm`` (one images-per-GPU
    column), however the table pads its columns."""
    [row] = [line for line in table.splitlines() if re.match(rf"\|\s*{norm}\s*\|", line)]
    return row.split("|")[2].strip()


def test_a_sweep_on_slurm_finishes_a_requeued_job_resumes_and_a_failed_one_is_shown(
    tmp_path, tiny_shapes, monkeypatch, capsys, job_tiny_opts
):
    assert shutil.which("sbatch"), "make slurm-check puts Slurm's commands on PATH"
    monkeypatch.setenv("DETECTRON2_DATASETS", os.fspath(tiny_shapes))
    out = tmp_path / "out"
    argv = ["--configs", SHAPES_TEMPLATE, "--norms", "gn,frn", "--ims-per-gpu", "2"]
    argv += ["--output", os.fspath(out), *JOB_FLAGS, *job_tiny_opts]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    _show(capsys, "tools/sweep.py --launcher slurm", printed)
    assert "2 submitted" in printed and "squeue --jobs" in printed
    folders = {norm: out / STEM / norm / "ipg2" / "seed0" for norm in ("gn", "frn")}
    victim = folders["frn"]
    job_id = json.loads((victim / "JOB.json").read_text())["job_id"]

    # Once the run has a checkpoint: the signal Slurm sends before a job's time limit.
    _until("a checkpoint of the frn run", lambda: (victim / "last_checkpoint").is_file(), every=0.2)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    # submitit requeues it; Slurm holds a requeued job back (BeginTime) before it runs again.
    _until(
        "the signalled job to be pending again",
        lambda: job_statuses([victim])[victim].state == "PENDING",
        timeout=120,
        every=0.5,
    )
    table = summarize(out, curves=False)["table"].read_text()
    _show(capsys, f"summary after scancel --signal=USR2 {job_id}", table)
    _show(capsys, "squeue", subprocess.run(["squeue"], capture_output=True, text=True).stdout)
    assert re.search(rf"unfinished \(iter \d+/4\); Slurm job {job_id} pending", _cell(table, "frn"))

    _until(
        "both runs to finish",
        lambda: all(read_state(f).status in ("done", "failed") for f in folders.values()),
    )
    for norm, folder in folders.items():
        state = read_state(folder)
        assert state.status == "done", (norm, (folder / "train_net.log").read_text()[-3000:])
        assert {"bbox/AP", "segm/AP"} <= state.results.keys()
    job_log = Path(json.loads((victim / "JOB.json").read_text())["job_log"]).read_text()
    assert "Calling checkpoint method" in job_log and f"Requeued job {job_id}" in job_log
    starts = re.findall(
        r"Command Line Args: Namespace\(.*?resume=(\w+)", (victim / "train_net.log").read_text()
    )
    assert starts == ["False", "True"], starts
    log = (victim / "log.txt").read_text()
    resumed_at = re.findall(r"Starting training from iteration (\d+)", log)
    assert resumed_at[0] == "0" and len(resumed_at) == 2 and int(resumed_at[1]) >= 2, resumed_at

    # Sweeping again submits nothing; the summary has both runs' AP.
    assert main(argv) == 0
    printed = capsys.readouterr().out
    _show(capsys, "the same sweep again", printed)
    assert "0 submitted, 0 already queued or running, 2 already done" in printed
    table = summarize(out, curves=False)["table"].read_text()
    _show(capsys, "summary when both jobs ended", table)
    _show(capsys, f"submitit's log of job {job_id}", job_log)
    for norm in ("gn", "frn"):
        assert re.fullmatch(r"\d+\.\d / \d+\.\d", _cell(table, norm)), table

    # A run whose job fails (train_net refuses weights that are not where the job runs; the
    # sweep plans schedules, it does not read checkpoints): failed, with its log.
    broken = tmp_path / "broken"
    argv = ["--configs", SHAPES_TEMPLATE, "--norms", "gn", "--ims-per-gpu", "2"]
    argv += ["--output", os.fspath(broken), *JOB_FLAGS, *job_tiny_opts]
    assert main([*argv, "MODEL.WEIGHTS", os.fspath(tmp_path / "missing.pth")]) == 0
    folder = broken / STEM / "gn" / "ipg2" / "seed0"
    _until(
        "the broken run's job to end",
        lambda: not job_statuses([folder])[folder].active,
        timeout=300,
    )
    table = summarize(broken, curves=False)["table"].read_text()
    _show(capsys, "summary of a run whose job failed", table)
    failed_id = json.loads((folder / "JOB.json").read_text())["job_id"]
    expected = f"failed (exit 2, iter 0/4); Slurm job {failed_id}, log: {folder / 'train_net.log'}"
    assert _cell(table, "gn") == expected, table
    assert "missing.pth does not exist" in (folder / "train_net.log").read_text()
