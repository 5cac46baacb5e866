"""Crash safety: real training processes killed with SIGKILL at chosen moments resume with
``--resume`` from the newest complete checkpoint and finish; checkpoints are written
atomically."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from frn_det.checkpoint import SafeCheckpointer
from frn_det.engine.trainer import repair_torn_metrics_line, set_aside_metrics_from

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")

MAX_ITER = 24
PERIOD = 6  # checkpoints after iterations 5, 11, 17, 23; model_final after 23
TORN_LINE = '{"data_time": 0.01, "iteration": 21, "total_lo'

# Runs tools/train_net.py after arranging for the process to SIGKILL itself at the moment
# FRN_TEST_KILL names, so that each kill point is hit exactly, not by timing:
#   write:NAME:BYTES   after writing BYTES bytes of NAME.pth's temporary file (then fsync)
#   tag:NAME           after NAME.pth is renamed into place, before last_checkpoint names it
#   saved:NAME         right after the checkpoint NAME.pth and last_checkpoint are written
#   iter:N             at the start of iteration N (metrics of earlier ones written)
CHILD = r"""
import os, runpy, signal, sys
import torch
from frn_det.checkpoint import SafeCheckpointer
from frn_det.engine.trainer import Trainer

point, _, arg = os.environ["FRN_TEST_KILL"].partition(":")

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "write":
    name, limit = arg.split(":")
    limit = int(limit)
    real_save = torch.save

    class CutShort:
        def __init__(self, f):
            self.f, self.written = f, 0
        def write(self, data):
            data = bytes(data)
            if self.written + len(data) >= limit:
                self.f.write(data[: limit - self.written])
                self.f.flush()
                os.fsync(self.f.fileno())
                die()
            self.written += len(data)
            return self.f.write(data)
        def flush(self):
            self.f.flush()

    def save(obj, f, *args, **kwargs):
        if os.path.basename(getattr(f, "name", "")).startswith(f".{name}.pth."):
            f = CutShort(f)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
elif point == "tag":
    real_tag = SafeCheckpointer.tag_last_checkpoint
    def tag(self, basename):
        if basename == f"{arg}.pth":
            die()
        real_tag(self, basename)
    SafeCheckpointer.tag_last_checkpoint = tag
elif point == "saved":
    real_save_checkpoint = SafeCheckpointer.save
    def save_checkpoint(self, name, **kwargs):
        real_save_checkpoint(self, name, **kwargs)
        if name == arg:
            die()
    SafeCheckpointer.save = save_checkpoint
elif point == "iter":
    real_step = Trainer.run_step
    def run_step(self):
        if self.iter == int(arg):
            die()
        real_step(self)
    Trainer.run_step = run_step

sys.argv = ["train_net.py", *sys.argv[1:]]
runpy.run_path(sys.argv.pop(1), run_name="__main__")
"""


def _train(command: list[str], child: Path, kill: str) -> tuple[int, str]:
    env = {**os.environ, "FRN_TEST_KILL": kill, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, os.fspath(child), os.fspath(REPO / "tools" / "train_net.py"), *command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def _pointer(output_dir: Path) -> str:
    return (output_dir / "last_checkpoint").read_text()


def _temporary_files(output_dir: Path) -> list[str]:
    return sorted(p.name for p in output_dir.iterdir() if p.name.endswith(".tmp"))


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def killed_and_resumed(tiny_args, tmp_path_factory):
    """One training run killed four times (during a checkpoint write, between the rename
    and the pointer update, right after a checkpoint, between checkpoints) and resumed
    after each with --resume; what was on disk after each stage."""
    output_dir = tmp_path_factory.mktemp("killed")
    child = output_dir.parent / "kill_child.py"
    child.write_text(CHILD)
    opts = ["SOLVER.CHECKPOINT_PERIOD", str(PERIOD), "DATASETS.TEST", "()"]
    args = tiny_args(output_dir, opts=opts + ["MODEL.DEVICE", "cpu"], max_iter=MAX_ITER)
    stages = {}

    def stage(name: str, kill: str, resume: bool, expect_killed: bool = True) -> None:
        command = ["--config-file", args.config_file, *(["--resume"] if resume else [])]
        rc, log = _train([*command, *args.opts], child, kill)
        expected = -signal.SIGKILL if expect_killed else 0
        assert rc == expected, f"{name}: exit status {rc}, expected {expected}\n{log[-4000:]}"
        starts = [line for line in log.splitlines() if "Starting training from iteration" in line]
        stages[name] = {
            "pointer": _pointer(output_dir) if (output_dir / "last_checkpoint").exists() else None,
            "files": sorted(p.name for p in output_dir.glob("model_*.pth")),
            "temporary": _temporary_files(output_dir),
            "start": int(starts[-1].rsplit(" ", 1)[1]) if starts else None,
            "metrics": (output_dir / "metrics.json").read_text()
            if (output_dir / "metrics.json").exists()
            else "",
        }

    stage("write", "write:model_0000011:20000", resume=False)
    stage("tag", "tag:model_0000011", resume=True)
    stage("saved", "saved:model_0000017", resume=True)
    stage("iter", "iter:22", resume=True)
    # As if the kill had hit detectron2's JSONWriter halfway through a line.
    with open(output_dir / "metrics.json", "a") as f:
        f.write(TORN_LINE)
    stage("finish", "none", resume=True, expect_killed=False)
    yield {"dir": output_dir, **stages}
    for checkpoint in output_dir.glob("*.pth"):  # ~100 MB each, on a shared disk
        checkpoint.unlink()


def test_a_run_killed_during_a_checkpoint_write_keeps_the_previous_checkpoint_and_pointer(
    killed_and_resumed,
):
    after = killed_and_resumed["write"]
    assert after["pointer"] == "model_0000005.pth"
    assert after["files"] == ["model_0000005.pth"]  # no partial file under the final name
    (partial,) = after["temporary"]
    assert partial.startswith(".model_0000011.pth.")


def test_resuming_removes_the_temporary_file_of_the_killed_writer(killed_and_resumed):
    assert killed_and_resumed["tag"]["temporary"] == []


def test_a_run_killed_between_the_rename_and_the_pointer_update_resumes_from_the_pointer(
    killed_and_resumed,
):
    after = killed_and_resumed["tag"]
    assert after["start"] == 6  # resumed from model_0000005 after the write kill
    # The new checkpoint is complete, but last_checkpoint still names the previous one.
    assert after["files"] == ["model_0000005.pth", "model_0000011.pth"]
    assert after["pointer"] == "model_0000005.pth"
    assert killed_and_resumed["saved"]["start"] == 6


def test_a_run_killed_right_after_a_checkpoint_resumes_from_it(killed_and_resumed):
    assert killed_and_resumed["saved"]["pointer"] == "model_0000017.pth"
    assert killed_and_resumed["iter"]["start"] == 18


def test_a_run_killed_between_checkpoints_resumes_from_the_last_one_and_finishes(
    killed_and_resumed,
):
    output_dir = killed_and_resumed["dir"]
    assert '"iteration": 19' in killed_and_resumed["iter"]["metrics"]  # written, then killed
    assert killed_and_resumed["finish"]["start"] == 18
    assert _pointer(output_dir) == "model_final.pth"
    done = [f"model_{i:07d}.pth" for i in range(PERIOD - 1, MAX_ITER, PERIOD)] + ["model_final.pth"]
    assert killed_and_resumed["finish"]["files"] == done
    assert killed_and_resumed["finish"]["temporary"] == []


def test_every_checkpoint_of_the_killed_and_resumed_run_loads_with_its_iteration(
    killed_and_resumed,
):
    output_dir = killed_and_resumed["dir"]
    for name, iteration in [("model_0000005", 5), ("model_0000011", 11), ("model_0000017", 17)]:
        checkpoint = torch.load(output_dir / f"{name}.pth", weights_only=True)
        assert checkpoint["iteration"] == iteration
        assert checkpoint["trainer"]["iteration"] == iteration
    final = torch.load(output_dir / "model_final.pth", weights_only=True)
    assert final["iteration"] == MAX_ITER - 1
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())


def test_metrics_json_of_the_killed_and_resumed_run_parses_and_its_iterations_increase(
    killed_and_resumed,
):
    output_dir = killed_and_resumed["dir"]
    iterations = [record["iteration"] for record in _metrics(output_dir)]
    assert iterations == [19, MAX_ITER - 1]  # detectron2 writes every 20 and at the end
    assert all("total_loss" in record for record in _metrics(output_dir))
    # The killed run's line for iteration 19, trained again after resuming from 17, is kept
    # beside metrics.json, and the torn line is gone.
    superseded = (output_dir / "metrics.superseded.json").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in superseded] == [19]
    assert TORN_LINE not in (output_dir / "metrics.json").read_text()


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))


def test_a_save_interrupted_mid_write_leaves_the_previous_checkpoint_and_pointer_untouched(
    tmp_path, monkeypatch
):
    checkpointer = SafeCheckpointer(_net(), str(tmp_path), save_to_disk=True)
    checkpointer.save("model_0000001", iteration=1)
    before = (tmp_path / "model_0000001.pth").read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        checkpointer.save("model_0000002", iteration=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000001.pth").read_bytes() == before


def test_a_saved_checkpoint_replaces_one_of_the_same_name_and_the_pointer_follows(tmp_path):
    net = _net()
    checkpointer = SafeCheckpointer(net, str(tmp_path), save_to_disk=True)
    checkpointer.save("model_0000001", iteration=1)
    with torch.no_grad():
        net[0].weight.fill_(3.0)
    checkpointer.save("model_0000001", iteration=1)
    checkpointer.save("model_final", iteration=2)
    saved = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert bool((saved["model"]["0.weight"] == 3.0).all())
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert _temporary_files(tmp_path) == []


def test_temporary_files_of_live_processes_and_other_hosts_are_kept(tmp_path):
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".model_0000001.pth.{host}.{int(dead.stdout)}.tmp"
    live = tmp_path / f".model_0000002.pth.{host}.{os.getpid()}.tmp"
    elsewhere = tmp_path / f".model_0000003.pth.other-host.{int(dead.stdout)}.tmp"
    for path in (stale, live, elsewhere):
        path.write_bytes(b"PK\x03\x04partial")
    removed = SafeCheckpointer(_net(), str(tmp_path)).remove_stale_temporary_files()
    assert removed == [str(stale)]
    assert _temporary_files(tmp_path) == sorted([live.name, elsewhere.name])


def test_a_torn_last_metrics_line_is_cut_and_complete_lines_are_kept(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"iteration": 19, "loss": 1.0}\n{"iteration": 39, "lo')
    repair_torn_metrics_line(str(path))
    assert path.read_text() == '{"iteration": 19, "loss": 1.0}\n'
    path.write_text('{"iteration": 19, "loss": 1.0}')  # complete, only the newline missing
    repair_torn_metrics_line(str(path))
    assert path.read_text() == '{"iteration": 19, "loss": 1.0}\n'


def test_resuming_sets_aside_the_metrics_of_iterations_trained_again(tmp_path):
    path = tmp_path / "metrics.json"
    lines = [json.dumps({"iteration": i, "loss": 1.0}) + "\n" for i in (19, 39, 59)]
    path.write_text("".join(lines))
    with open(path, "a") as writer:  # detectron2's JSONWriter holds the file open
        assert set_aside_metrics_from(str(path), start_iter=40) == 1
        writer.write(json.dumps({"iteration": 59, "loss": 0.5}) + "\n")
    assert [json.loads(x)["iteration"] for x in path.read_text().splitlines()] == [19, 39, 59]
    assert json.loads(path.read_text().splitlines()[-1])["loss"] == 0.5
    assert (tmp_path / "metrics.superseded.json").read_text() == lines[2]
