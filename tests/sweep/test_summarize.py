"""tools/summarize.py: the table with spread, unfinished runs shown, CSV/JSON/PNG, curves."""

from __future__ import annotations

import csv
import json
import re

import pytest
from PIL import Image

from frn_det_tools.summarize import (
    collect_runs,
    group_points,
    main,
    markdown_table,
    plot_training_curves,
    summarize,
    training_curves_figure,
)
from frn_det_tools.sweep import metrics_by_iteration, read_metrics


def _valid_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


@pytest.fixture
def sweep_out(tmp_path, fake_run):
    """A sweep folder: bn finished twice at 1 and 2 images/GPU, syncbn on 2 processes,
    frn with one repeat unfinished and a failed point, gn only unfinished."""
    out = tmp_path / "out"
    fake_run(out, "bn", 1, 0, "done", box=29.0, mask=24.0)
    fake_run(out, "bn", 1, 1, "done", box=31.0, mask=26.0)
    fake_run(out, "bn", 2, 0, "done", box=33.0, mask=28.0)
    fake_run(out, "bn", 2, 1, "done", box=35.0, mask=30.0)
    fake_run(out, "syncbn", 1, 0, "done", box=34.0, mask=29.0, num_gpus=2)
    fake_run(out, "frn", 1, 0, "done", box=36.0, mask=31.0)
    fake_run(out, "frn", 1, 1, "unfinished", iteration=120)
    fake_run(out, "frn", 2, 0, "failed", iteration=40, returncode=1)
    fake_run(out, "gn", 1, 0, "unfinished", iteration=120)
    return out


def _one_space(text):
    # tabulate pads cells to the column's width
    return re.sub(" +", " ", text)


def _rows(table):
    return {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith(("| norm", "| ---"))
    }


def test_the_table_has_a_row_per_norm_a_column_per_batch_and_the_spread_of_repeats(
    sweep_out,
):
    table = markdown_table(group_points(collect_runs(sweep_out)))
    assert "| norm | 1 image/GPU | 2 images/GPU |" in _one_space(table)
    rows = _rows(table)
    assert list(rows) == ["bn", "syncbn (2 processes)", "gn", "frn"]
    # mean ± sample std of (29, 31) and (24, 26): sqrt(2) = 1.4
    assert rows["bn"] == ["30.0 ± 1.4 / 25.0 ± 1.4 (n=2)", "34.0 ± 1.4 / 29.0 ± 1.4 (n=2)"]
    assert rows["syncbn (2 processes)"] == ["34.0 / 29.0", "no run"]


def test_runs_that_did_not_finish_are_shown_not_dropped(sweep_out):
    rows = _rows(markdown_table(group_points(collect_runs(sweep_out))))
    assert rows["frn"] == ["36.0 / 31.0; unfinished (iter 120/400)", "failed (exit 1, iter 40/400)"]
    assert rows["gn"] == ["unfinished (iter 120/400)", "no run"]


def test_summarize_writes_table_csv_strict_json_and_a_png(sweep_out, tmp_path):
    written = summarize(sweep_out, tmp_path / "summary")
    with written["csv"].open() as f:
        rows = {(r["norm"], r["ims_per_gpu"]): r for r in csv.DictReader(f)}
    bn = rows[("bn", "1")]
    assert (bn["runs"], bn["finished"], bn["box_AP_mean"], bn["box_AP_min"]) == (
        "2",
        "2",
        "30.0",
        "29.0",
    )
    assert rows[("frn", "1")]["not_finished"] == "unfinished (iter 120/400)"
    assert rows[("gn", "1")]["box_AP_mean"] == ""

    data = json.loads(written["json"].read_text(), parse_constant=pytest.fail)
    assert len(data["runs"]) == 9 and len(data["points"]) == 6
    statuses = {(r["norm"], r["ims_per_gpu"], r["seed"]): r["status"] for r in data["runs"]}
    assert statuses[("frn", 2, 0)] == "failed" and statuses[("gn", 1, 0)] == "unfinished"

    width, height = _valid_png(written["plot"])
    assert width > 400 and height > 300
    curves = [path for name, path in written.items() if name.startswith("curves:")]
    assert len(curves) == 9
    _valid_png(curves[0])


def test_a_config_without_masks_gets_box_ap_columns_and_nan_ap_is_null_in_json(tmp_path, fake_run):
    out = tmp_path / "out"
    fake_run(out, "frn", 4, 0, "done", box=float("nan"), stem="faster_rcnn_R_50_FPN_3x")
    # As train_net's metrics.json, and so DONE.json, write it now.
    fake_run(out, "frn", 8, 0, "done", box="NaN", stem="faster_rcnn_R_50_FPN_3x")
    written = summarize(out, curves=False)
    table = written["table"].read_text()
    assert "box AP (COCO, %)" in table and "mask AP" not in table
    assert _rows(table)["frn"] == ["nan", "nan"]
    runs = json.loads(written["json"].read_text())["runs"]
    assert [run["results"] for run in runs] == [{"bbox/AP": None}, {"bbox/AP": None}]
    _valid_png(written["plot"])


def test_a_folder_train_net_finished_without_the_sweep_counts_as_finished(tmp_path):
    folder = tmp_path / "out" / "cfg" / "frn" / "ipg2" / "seed3"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("SOLVER:\n  MAX_ITER: 20\n")
    (folder / "model_final.pth").write_bytes(b"final")
    (folder / "metrics.json").write_text(
        '{"iteration": 19, "total_loss": 1.0}\n{"iteration": 20, "bbox/AP": 12.5}\n'
    )
    [record] = collect_runs(tmp_path / "out")
    assert record.finished and record.describe() == "done"
    assert _rows(markdown_table(group_points([record])))["frn"] == ["12.5"]


def test_training_curves_come_from_metrics_json_with_a_torn_last_line(tmp_path):
    metrics = tmp_path / "metrics.json"
    lines = [json.dumps({"iteration": i, "total_loss": 3.0 - i / 10}) for i in range(0, 20)]
    lines.insert(10, json.dumps({"iteration": 9, "bbox/AP": 5.0, "segm/AP": 4.0}))
    # Resumed from iteration 15: iterations 15.. again; the later values win.
    lines += [json.dumps({"iteration": i, "total_loss": 0.5}) for i in range(15, 20)]
    metrics.write_text("\n".join(lines) + '\n{"iteration": 20, "total_lo')
    png = tmp_path / "curves.png"
    assert plot_training_curves(metrics, png, "frn ipg1") == 1
    _valid_png(png)
    records, skipped = read_metrics(metrics)
    assert skipped == 1 and len(records) == 26


def test_training_curves_of_a_short_run_have_markers_and_ap_at_each_evaluation():
    records = [
        {"iteration": 0, "total_loss": 3.0, "loss_cls": 1.0},
        {"iteration": 1, "total_loss": 2.0, "loss_cls": 0.8},
        # During training at the index of the last step (2 trained), after it at MAX_ITER.
        {"iteration": 1, "bbox/AP": 5.0, "segm/AP": 4.0},
        # metrics.json writes a NaN AP (nothing predicted) as a string.
        {"iteration": 4, "bbox/AP": 7.0, "segm/AP": "NaN"},
    ]
    loss_ax, ap_ax = training_curves_figure(metrics_by_iteration(records), max_iter=4).axes
    lines = {line.get_label(): line for line in loss_ax.get_lines() + ap_ax.get_lines()}
    assert list(lines["total_loss"].get_xdata()) == [1, 2]
    assert list(lines["loss_cls"].get_ydata()) == [1.0, 0.8]
    assert list(lines["box AP"].get_xdata()) == [2, 4] and list(lines["box AP"].get_ydata()) == [
        5,
        7,
    ]
    assert list(lines["mask AP"].get_xdata()) == [2]
    assert all(line.get_marker() == "o" for line in lines.values())
    assert loss_ax.get_xlim()[0] == 0 and loss_ax.get_xlim()[1] >= 4
    assert ap_ax.get_ylim()[0] == 0 and ap_ax.get_ylim()[1] > 7
    labels = sorted(t.get_text() for t in ap_ax.texts)
    assert labels == ["4.0", "5.0", "7.0", "AP undefined (nothing predicted) at 4"]

    # One logged point is drawn, not an empty panel.
    (single,) = training_curves_figure({0: {"iteration": 0, "total_loss": 1.0}}).axes[0].get_lines()
    assert single.get_marker() == "o" and len(single.get_xdata()) == 1

    diverged = {0: {"total_loss": 1.0}, 1: {"total_loss": "NaN"}, 2: {"total_loss": "Infinity"}}
    (line,) = training_curves_figure(diverged).axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 2, 3] and line.get_ydata()[0] == 1.0

    long_run = {i: {"iteration": i, "total_loss": 1.0} for i in range(0, 2000, 20)}
    (line,) = training_curves_figure(long_run).axes[0].get_lines()
    assert line.get_marker() in ("None", None, "")


def test_the_command_line_prints_the_table_and_names_a_missing_folder(sweep_out, tmp_path, capsys):
    assert main([str(sweep_out), "--dest", str(tmp_path / "s"), "--no-curves"]) == 0
    out = capsys.readouterr().out
    assert "| frn |" in _one_space(out) and "ap_vs_ims_per_gpu.png" in out
    assert not (tmp_path / "s" / "curves").exists()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    assert "nowhere" in capsys.readouterr().err


def test_a_file_or_a_folder_without_run_folders_is_refused_and_nothing_is_written(
    tmp_path, capsys
):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a sweep\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, message in ((a_file, "is a file, not a folder"), (empty, "no run folders")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(path)])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert list(empty.iterdir()) == []
