"""frn_det_tools.batch_dependence: the search's choice, the layout effect against the seed
spread, AP along the schedule averaged over seeds, and the files of the report."""

from __future__ import annotations

import json
import math
import re

import pytest

from frn_det_tools.batch_dependence import (
    chosen_learning_rates,
    cost_rows,
    layout_effects,
    lr_search_rows,
    main,
    mean_curves,
    probe_curves,
    schedule_rows,
)
from frn_det_tools.summarize import collect_runs, group_points

STEM = "mask_rcnn_R_18_FPN_fixed_batch8"


def _grid(fake_run, root, aps):
    """Finished runs with box AP aps[(norm, ipg)][seed], and an evaluation at iteration 199
    (half the schedule) of half the final AP."""
    for (norm, ipg), values in aps.items():
        for seed, ap in enumerate(values):
            folder = fake_run(root, norm, ipg, seed, "done", box=ap, mask=ap - 2, stem=STEM)
            with (folder / "metrics.json").open("a") as f:
                f.write(json.dumps({"iteration": 199, "bbox/AP": ap / 2}) + "\n")


def test_the_search_chooses_each_norms_highest_final_box_ap_at_its_layout(fake_run, tmp_path):
    for lr, aps in (("0.02", {"bn": 10.0, "frn": 20.0}), ("0.04", {"bn": 12.0, "frn": 18.0})):
        for norm, ap in aps.items():
            fake_run(tmp_path / f"lr{lr}", norm, 4, 0, "done", box=ap, stem=STEM)
    fake_run(tmp_path / "lr0.08", "bn", 4, 0, "unfinished", iteration=100, stem=STEM)
    rows = lr_search_rows(tmp_path)
    assert [(r["norm"], r["base_lr"], r["box_AP"]) for r in rows] == [
        ("bn", 0.02, 10.0), ("bn", 0.04, 12.0), ("frn", 0.02, 20.0), ("frn", 0.04, 18.0)
    ]  # fmt: skip
    assert chosen_learning_rates(rows) == {"bn": 0.04, "frn": 0.02}


def test_a_tie_in_the_search_goes_to_the_smaller_learning_rate():
    rows = [{"norm": "gn", "base_lr": lr, "box_AP": 5.0} for lr in (0.04, 0.02)]
    assert chosen_learning_rates(rows) == {"gn": 0.02}


def test_the_layout_effect_is_compared_with_its_standard_error_over_seeds(fake_run, tmp_path):
    _grid(fake_run, tmp_path, {
        ("bn", 8): [30.0, 31.0, 32.0], ("bn", 1): [20.0, 21.0, 22.0],
        ("frn", 8): [25.0, 28.0, 31.0], ("frn", 1): [26.0, 29.0, 29.0],
    })  # fmt: skip
    effects = {e.norm: e for e in layout_effects(group_points(collect_runs(tmp_path)))}
    bn, frn = effects["bn"], effects["frn"]
    assert (bn.large, bn.small) == (8, 1)
    assert bn.difference == pytest.approx(-10.0)
    assert bn.standard_error == pytest.approx(math.sqrt(1 / 3 + 1 / 3))
    assert bn.exceeds_spread
    assert frn.difference == pytest.approx(0.0)
    assert not frn.exceeds_spread


def test_one_seed_at_an_end_has_no_spread_to_exceed(fake_run, tmp_path):
    _grid(fake_run, tmp_path, {("bn", 8): [30.0, 31.0], ("bn", 1): [5.0]})
    (effect,) = layout_effects(group_points(collect_runs(tmp_path)))
    assert effect.difference == pytest.approx(-25.5)
    assert math.isnan(effect.standard_error)
    assert not effect.exceeds_spread


def test_curves_average_each_evaluation_over_the_seeds(fake_run, tmp_path):
    _grid(fake_run, tmp_path, {("gn", 2): [10.0, 14.0]})
    curve = mean_curves(collect_runs(tmp_path))[("gn", 2)]
    # The evaluation logged at iteration 199 is after 200 steps; the final one at 400.
    assert [(step, mean, n) for step, mean, _, n in curve] == [(200, 6.0, 2), (400, 12.0, 2)]
    assert curve[1][2] == pytest.approx(math.sqrt(8.0))


def test_the_schedule_rows_read_ap_before_and_after_the_first_lr_step():
    # 10 evaluations of a 1000-iteration run; 3/5, 7/10, 4/5 and 9/10 are the ones at 600,
    # 700, 800 and 900.
    curve = [(step, step / 20, 0.0, 3) for step in range(100, 1001, 100)]
    short = [(500, 1.0, 0.0, 3), (1000, 2.0, 0.0, 3)]  # too few evaluations for a row
    rows = schedule_rows({("bn", 1): curve, ("gn", 8): curve, ("frn", 8): short})
    keys = ("norm", "images_per_gpu", "early", "before_step", "late", "last_but_one", "end")
    assert [tuple(r[k] for k in keys) for r in rows] == [
        ("bn", 1, 30.0, 35.0, 40.0, 45.0, 50.0), ("gn", 8, 30.0, 35.0, 40.0, 45.0, 50.0)
    ]  # fmt: skip


def test_the_cost_of_a_run_is_averaged_per_layout_from_done_json(fake_run, tmp_path):
    for ipg, gpus, seed, seconds in ((8, 1, 0, 300), (8, 1, 1, 420), (1, 8, 0, 960)):
        folder = fake_run(tmp_path, "gn", ipg, seed, "done", box=1.0, num_gpus=gpus, stem=STEM)
        done = json.loads((folder / "DONE.json").read_text())
        (folder / "DONE.json").write_text(json.dumps({**done, "seconds": seconds}))
    fake_run(tmp_path, "gn", 1, 1, "unfinished", iteration=100, num_gpus=8, stem=STEM)
    rows = cost_rows(collect_runs(tmp_path))
    assert [(r["gpus"], r["images_per_gpu"], r["runs"]) for r in rows] == [(1, 8, 2), (8, 1, 1)]
    assert (rows[0]["mean_minutes"], rows[0]["min_minutes"], rows[0]["max_minutes"]) == (
        pytest.approx(6.0),
        pytest.approx(5.0),
        pytest.approx(7.0),
    )
    assert rows[1]["mean_minutes"] == pytest.approx(16.0)


def test_the_report_writes_its_files_and_refuses_an_empty_grid(fake_run, tmp_path, capsys):
    grid = tmp_path / "grid"
    _grid(fake_run, grid, {("bn", 8): [30.0, 32.0], ("bn", 1): [20.0, 22.0]})
    dest = tmp_path / "report"
    assert main([str(grid), "--dest", str(dest)]) == 0
    data = json.loads((dest / "summary.json").read_text())
    assert {r["images_per_gpu"] for r in data["runs"]} == {1, 8}
    assert all(r["design"] for r in data["runs"])
    assert [(p["norm"], p["images_per_gpu"], p["box_AP_mean"]) for p in data["points"]] == [
        ("bn", 1, 21.0), ("bn", 8, 31.0)
    ]  # fmt: skip
    for name in ("summary.csv", "ap_vs_ims_per_gpu.png", "curves.png"):
        assert (dest / name).stat().st_size > 0
    assert "| -10.0 ± 1.4 " in (dest / "results.md").read_text()
    assert data["machines"] == [{"machine": "not recorded", "runs": 4, "which": [
        "bn ipg1 seed0", "bn ipg1 seed1", "bn ipg8 seed0", "bn ipg8 seed1"]}]  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--dest", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()
    assert "no run folders" in capsys.readouterr().out


def _probe_run(folder, evaluations):
    folder.mkdir(parents=True)
    with (folder / "metrics.json").open("w") as f:
        for step, box in evaluations:  # a training line, then the evaluation after it
            f.write(json.dumps({"iteration": step - 1, "total_loss": 1.0}) + "\n")
            f.write(json.dumps({"iteration": step - 1, "bbox/AP": box, "segm/AP": box - 1}) + "\n")


def test_the_schedule_probe_tabulates_each_runs_ap_at_its_evaluations(fake_run, tmp_path):
    probe = tmp_path / "probe"
    _probe_run(probe / "bn_cur", [(100, 5.0), (200, 20.0)])
    _probe_run(probe / "gn_cur", [(100, 7.0)])
    (probe / "empty").mkdir()  # no metrics: not a run
    assert probe_curves(probe) == {"bn_cur": [(100, 5.0, 4.0), (200, 20.0, 19.0)],
                                   "gn_cur": [(100, 7.0, 6.0)]}  # fmt: skip
    grid = tmp_path / "grid"
    _grid(fake_run, grid, {("bn", 8): [30.0]})
    dest = tmp_path / "report"
    assert main([str(grid), "--schedule-probe", str(probe), "--dest", str(dest)]) == 0
    assert "| gn_cur | 7.0   | -     |" in (dest / "results.md").read_text()
    saved = json.loads((dest / "summary.json").read_text())["schedule_probe"]
    assert saved["bn_cur"][1] == {"iteration": 200, "box_AP": 20.0, "mask_AP": 19.0}
    assert main([str(grid), "--schedule-probe", str(tmp_path / "nope"),
                 "--dest", str(tmp_path / "none")]) == 2  # fmt: skip
    assert not (tmp_path / "none").exists()


def test_diverged_runs_are_reported_as_such_in_the_grid_and_the_search(fake_run, tmp_path):
    grid = tmp_path / "grid"
    _grid(fake_run, grid, {("frn", 8): [30.0, 32.0], ("frn", 1): [20.0]})
    fake_run(grid, "frn", 1, 1, "failed", iteration=700, stem=STEM, diverged=True)
    search = tmp_path / "search"
    fake_run(search / "lr0.04", "frn", 8, 0, "done", box=25.0, stem=STEM)
    fake_run(search / "lr0.08", "frn", 8, 0, "failed", iteration=60, stem=STEM, diverged=True)
    dest = tmp_path / "report"
    assert main([str(grid), "--lr-search", str(search), "--dest", str(dest)]) == 0
    data = json.loads((dest / "summary.json").read_text())
    point = next(p for p in data["points"] if p["images_per_gpu"] == 1)
    assert (point["runs"], point["finished"], point["diverged"], point["box_AP_n"]) == (2, 1, 1, 1)
    assert [r["seed"] for r in data["runs"] if r["diverged"]] == [1]
    assert [(r["base_lr"], r["diverged"]) for r in data["lr_search"]] == [
        (0.04, False), (0.08, True)
    ]  # fmt: skip
    text = (dest / "results.md").read_text()
    assert "20.0 (n=1); 1 of 2 diverged" in text
    search_row = next(line for line in text.splitlines() if line.startswith("| frn "))
    assert [cell.strip() for cell in search_row.split("|")[2:5]] == ["25.0", "diverged", "0.04"]


def test_each_run_names_the_machine_its_archive_recorded(fake_run, tmp_path):
    grid = tmp_path / "grid"
    _grid(fake_run, grid, {("bn", 8): [30.0, 32.0]})
    machine = {"cpu": "Xeon", "cpu_family_model_stepping": "6/167/1", "cores": 2,
               "torch": "2.14.1", "torch_cpu_capability": "AVX512"}  # fmt: skip
    (grid / STEM / "bn" / "ipg8" / "seed1" / "MACHINE.json").write_text(json.dumps(machine))
    dest = tmp_path / "report"
    assert main([str(grid), "--dest", str(dest)]) == 0
    data = json.loads((dest / "summary.json").read_text())
    assert [r["machine"] for r in data["runs"]] == [None, machine]
    label = "Xeon (6/167/1), 2 cores, torch 2.14.1 AVX512"
    assert [(m["machine"], m["which"]) for m in data["machines"]] == [
        ("not recorded", ["bn ipg8 seed0"]), (label, ["bn ipg8 seed1"])
    ]  # fmt: skip
    rows = re.findall(r"(?m)^\| (.+?) +\| (\d+) +\| (.+?) +\|$", (dest / "results.md").read_text())
    assert (label, "1", "bn ipg8 seed1") in rows
