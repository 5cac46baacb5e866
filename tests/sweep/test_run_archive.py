"""frn_det_tools.run_archive: settled runs' records kept without checkpoints (a hash in their
place), put back so the sweep skips them, and never anything overwritten."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from frn_det_tools import run_archive
from frn_det_tools.run_archive import ArchiveError, restore, save
from frn_det_tools.summarize import collect_runs
from frn_det_tools.sweep import main as sweep_main
from frn_det_tools.sweep import read_state

REPO = Path(__file__).resolve().parents[2]
SHAPES_TEMPLATE = os.fspath(REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_{norm}.yaml")
STEM = "mask_rcnn_R_18_FPN"  # the conftest's fake_run default


def _grid(tmp_path, fake_run):
    out = tmp_path / "out"
    done = fake_run(out, "bn", 8, 0, "done", box=41.5, mask=40.0)
    (done / "train_net.log").write_text("trained\n")
    (done / "config.yaml").write_text("SOLVER:\n  MAX_ITER: 400\n")
    (done / "model_0000199.pth").write_bytes(b"an intermediate checkpoint")
    diverged = fake_run(out, "frn", 1, 0, "failed", iteration=120, diverged=True)
    unfinished = fake_run(out, "gn", 2, 0, "unfinished", iteration=200)
    crashed = fake_run(out, "gn", 1, 0, "failed", iteration=50)
    return out, done, diverged, unfinished, crashed


def test_save_keeps_the_records_of_settled_runs_a_hash_of_their_checkpoint_and_the_machine(
    tmp_path, fake_run
):
    out, done, diverged, unfinished, crashed = _grid(tmp_path, fake_run)
    archive = tmp_path / "archive"
    outcome = save(out, archive)
    name = done.relative_to(out).as_posix()
    assert sorted(outcome.copied) == sorted([name, diverged.relative_to(out).as_posix()])
    left = sorted(p.relative_to(out).as_posix() for p in (unfinished, crashed))
    assert sorted(outcome.left) == left
    kept = archive / name
    assert sorted(p.name for p in kept.iterdir()) == [
        "CHECKPOINT.json", "DONE.json", "MACHINE.json", "RUN.json", "config.yaml",
        "metrics.json", "train_net.log",
    ]  # fmt: skip
    assert json.loads((kept / "MACHINE.json").read_text()) == run_archive.machine_record()
    for file in ("DONE.json", "RUN.json", "config.yaml", "metrics.json", "train_net.log"):
        assert (kept / file).read_bytes() == (done / file).read_bytes()
    assert not (kept / "model_0000199.pth").exists()
    record = json.loads((kept / "CHECKPOINT.json").read_text())
    assert record == {
        "file": "model_final.pth",
        "sha256": hashlib.sha256(b"final").hexdigest(),
        "bytes": len(b"final"),
    }
    # The archive reads as the sweep output did: done with its results, diverged at 120.
    assert read_state(kept).status == "done"
    assert read_state(kept).results == read_state(done).results
    assert read_state(archive / diverged.relative_to(out)).diverged_at == 120
    assert not list(archive.glob("**/.*"))  # no scratch folder left behind
    # Saving again finds every run there already.
    again = save(out, archive)
    assert again.copied == [] and sorted(again.same) == sorted(outcome.copied)


def test_a_restored_grid_is_skipped_by_the_sweep_and_summarized_as_before(
    tmp_path, fake_run, fake_runner, monkeypatch
):
    out, done, *_ = _grid(tmp_path, fake_run)
    archive = tmp_path / "archive"
    save(out, archive)
    # Back into the output it came from (checkpoints, whole logs): the same runs.
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    home = restore(archive, out)
    assert home.copied == [] and len(home.same) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    fresh = tmp_path / "fresh"
    outcome = restore(archive, fresh)
    assert len(outcome.copied) == 2
    back = fresh / done.relative_to(out)
    assert not (back / "model_final.pth").exists()
    assert read_state(back).status == "done"
    def rows(root):
        return {(r.key, r.describe(), r.state.results.get("bbox/AP")) for r in collect_runs(root)}

    # The settled runs read back as they were (the others were not archived).
    assert rows(fresh) == {row for row in rows(out) if row[1] == "done" or "diverged" in row[1]}
    runner = fake_runner()
    code = sweep_main(
        ["--configs", SHAPES_TEMPLATE, "--norms", "bn", "--ims-per-gpu", "8",
         "--output", str(fresh)],
        runner=runner,
    )  # fmt: skip
    assert code == 0 and runner.commands == []
    # A restored run saves back as the same records: its CHECKPOINT.json and the machine
    # that trained it carried over, not the machine that saves it now.
    monkeypatch.setattr(run_archive, "machine_record", lambda: {"cpu": "another machine"})
    assert save(fresh, archive).copied == []
    assert "another machine" not in (archive / done.relative_to(out) / "MACHINE.json").read_text()


def test_nothing_is_overwritten_and_differing_records_are_refused_by_name(tmp_path, fake_run):
    out, done, *_ = _grid(tmp_path, fake_run)
    archive = tmp_path / "archive"
    save(out, archive)
    kept = archive / done.relative_to(out)
    (kept / "DONE.json").write_text('{"results": {"bbox/AP": 1.0}}')
    before = {p: p.read_bytes() for p in archive.rglob("*") if p.is_file()}
    with pytest.raises(ArchiveError, match=r"bn/ipg8/seed0.*DONE\.json"):
        save(out, archive)
    assert {p: p.read_bytes() for p in archive.rglob("*") if p.is_file()} == before
    # restore: a settled run there with other records is refused; an unfinished one is left.
    target = tmp_path / "target"
    fake_run(target, "bn", 8, 0, "done", box=10.0)
    with pytest.raises(ArchiveError, match="already holds other records"):
        restore(archive, target)
    assert not (target / STEM / "frn").exists()
    target2 = tmp_path / "target2"
    training = fake_run(target2, "bn", 8, 0, "unfinished", iteration=100)
    metrics = (training / "metrics.json").read_bytes()
    outcome = restore(archive, target2)
    assert outcome.left == [done.relative_to(out).as_posix()]
    assert (training / "metrics.json").read_bytes() == metrics
    assert not (training / "DONE.json").exists()


def test_the_command_line_reports_and_refuses_with_exit_2(tmp_path, fake_run, capsys):
    out, *_ = _grid(tmp_path, fake_run)
    archive = tmp_path / "archive"
    assert run_archive.main(["save", str(out), str(archive)]) == 0
    printed = capsys.readouterr().out
    assert "saved 2 run(s), 0 already there" in printed and "not settled: " in printed
    assert run_archive.main(["restore", str(tmp_path / "nowhere"), str(out)]) == 2
    assert "'" + str(tmp_path / "nowhere") + "' is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_archive.main(["save", str(tmp_path / "empty"), str(archive)]) == 2
    assert "no run folders under" in capsys.readouterr().err


def test_a_long_log_is_kept_as_its_last_whole_lines(tmp_path, fake_run):
    out = tmp_path / "out"
    run = fake_run(out, "frn", 1, 0, "failed", iteration=700, diverged=True)
    ending = (run / "train_net.log").read_text()
    lines = [f"iter {i}: a long training line {'x' * 40}\n" for i in range(3000)]
    (run / "train_net.log").write_text("".join(lines) + ending)
    save(out, tmp_path / "archive")
    kept = (tmp_path / "archive" / run.relative_to(out) / "train_net.log").read_bytes()
    assert len(kept) <= run_archive.LOG_TAIL_BYTES
    assert kept.endswith(ending.encode()) and kept.startswith(b"iter ")
    assert (run / "train_net.log").read_bytes().endswith(kept)
    assert read_state(tmp_path / "archive" / run.relative_to(out)).diverged_at == 700
    # The run's own folder, whole log and all, is the same run as its archived tail.
    assert restore(tmp_path / "archive", out).same == [run.relative_to(out).as_posix()]
    # Saved again from a restored copy, the tail is the same records.
    restore(tmp_path / "archive", tmp_path / "fresh")
    assert save(tmp_path / "fresh", tmp_path / "archive").copied == []


def test_the_machine_record_names_the_cpu_torch_and_its_cpu_kernels():
    import torch

    record = run_archive.machine_record()
    assert record["torch"] == torch.__version__
    assert record["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["cores"] >= 1 and isinstance(record["cpu"], str) and record["cpu"]
