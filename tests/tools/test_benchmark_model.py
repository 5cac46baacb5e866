"""tools/benchmark_model.py: the table and JSON it writes, and where its ratios come from.

A smoke test on the tiny R-18 shapes model, one untimed-for-real iteration; not a timing test.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from frn_det_tools.benchmark import BenchSpec, add_ratios, markdown, rss_worker

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "benchmark_model.py"
TINY = ["--config", "Shapes/mask_rcnn_R_18_FPN_{norm}.yaml", "--size", "64", "--batch", "1"]
TINY += ["--boxes", "1", "--iters", "1", "--warmup", "0", "--threads", "2"]
# Fewer and narrower RoIs than the shapes configs: the test checks plumbing, not speed.
SMALL = [
    "--opts",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
]
SMALL += ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32"]
SMALL += ["MODEL.ROI_MASK_HEAD.CONV_DIM", "32"]


def _one_space(text):
    # tabulate pads cells to the column's width
    return re.sub(" +", " ", text)


@pytest.fixture(scope="module")
def benchmark_model():
    spec = importlib.util.spec_from_file_location("frn_benchmark_model_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ratios_are_each_rows_time_over_bn_and_gn_time():
    rows = [
        {"norm": "BN", "s_per_iter": 2.0, "peak_bytes": 100},
        {"norm": "GN", "s_per_iter": 4.0, "peak_bytes": 200},
        {"norm": "FRN", "s_per_iter": 3.0, "peak_bytes": 150},
    ]
    add_ratios(rows)
    frn = rows[2]
    assert frn["vs_BN"] == pytest.approx(1.5)
    assert frn["vs_GN"] == pytest.approx(0.75)
    assert frn["peak_vs_GN"] == pytest.approx(0.75)
    assert rows[0]["vs_BN"] == 1.0 and rows[1]["vs_GN"] == 1.0


def test_ratios_are_none_where_the_reference_norm_was_not_measured():
    rows = add_ratios([{"norm": "FRN", "s_per_iter": 3.0}])
    assert rows[0]["vs_BN"] is None and rows[0]["vs_GN"] is None
    assert rows[0]["peak_vs_GN"] is None
    table = markdown(
        [dict(rows[0], it_per_s=1 / 3, first_iter_s=4.0, saved_bytes=0, fg_rois_per_iter=None)]
    )
    assert "| FRN | 3.000 | 0.333 | - | - |" in _one_space(table)


def test_one_run_prints_the_table_and_writes_json_with_ratios_from_the_measured_times(
    benchmark_model, tmp_path, capsys
):
    out = tmp_path / "bench.json"
    argv = TINY + ["--norms", "BN", "GN", "FRN", "--impl", "autograd", "--no-rss"]
    benchmark_model.main(argv + ["--json", str(out)] + SMALL)
    printed = capsys.readouterr().out
    assert "| norm | s/iter | it/s | x BN | x GN |" in _one_space(printed)
    assert "saved-for-backward MiB" in printed and "Targets" in printed

    result = json.loads(out.read_text())
    rows = {r["norm"]: r for r in result["rows"]}
    assert list(rows) == ["BN", "GN", "FRN"]
    assert result["meta"]["spec"]["impls"] == ["autograd"]
    for row in rows.values():
        assert len(row["times_s"]) == 1
        assert row["s_per_iter"] == row["times_s"][0] > 0
        assert row["it_per_s"] == pytest.approx(1 / row["s_per_iter"])
        assert row["vs_BN"] == pytest.approx(row["s_per_iter"] / rows["BN"]["s_per_iter"])
        assert row["vs_GN"] == pytest.approx(row["s_per_iter"] / rows["GN"]["s_per_iter"])
        assert row["saved_bytes"] > 0 and row["first_iter_s"] > 0
        assert f"| {row['norm']} | {row['s_per_iter']:.3f} |" in _one_space(printed)
    assert rows["FRN"]["impl"] == "autograd" and rows["BN"]["impl"] is None
    # Only the norm differs between the rows' networks (the same-network overrides).
    differing = result["meta"]["config_differences"]
    assert "MODEL.BACKBONE.FREEZE_AT" not in differing
    assert "MODEL.RESNETS.NORM" in differing


def test_peak_rss_of_an_iteration_is_the_rise_of_the_high_water_mark(benchmark_model):
    # rss_worker is what each fresh `python -m frn_det_tools.benchmark` process runs; here it runs
    # in the test's process (it only resets this process's VmHWM) to keep the test short.
    args = benchmark_model.parse_args(TINY + ["--norms", "GN"] + SMALL)
    memory = rss_worker(benchmark_model.spec_from_args(args), "GN", "GN")
    assert memory["peak_rss_bytes"] >= memory["rss_before_bytes"] > 0
    assert memory["rss_peak_rise_bytes"] == memory["peak_rss_bytes"] - memory["rss_before_bytes"]


def test_cpu_spec_rows_name_each_frn_implementation_when_several_are_compared():
    spec = BenchSpec(norms=("GN", "FRN"), impls=("compiled", "autograd"))
    assert spec.runs() == [("GN", "GN"), ("FRN compiled", "FRN"), ("FRN autograd", "FRN")]
    assert spec.impl_of("FRN autograd") == "autograd"


def test_a_ragged_batch_of_a_given_width_is_padded_and_padding_aware_rows_compare_with_plain():
    from frn_det_tools.benchmark import build_batch

    batch = build_batch(64, 3, 2, num_classes=4, device="cpu", ragged=True, full_width=96)
    assert [tuple(item["image"].shape[1:]) for item in batch] == [(64, 96), (64, 84), (64, 72)]
    for item in batch:
        boxes = item["instances"].gt_boxes.tensor
        assert (boxes[:, 2] <= item["width"]).all() and (boxes[:, 3] <= item["height"]).all()
    spec = BenchSpec(norms=("GN", "FRN"), padding_aware=("FRN",), impls=("auto",))
    assert spec.runs() == [("GN", "GN"), ("FRN", "FRN"), ("FRN padding-aware", "FRN")]
    rows = add_ratios(
        [
            {"norm": "FRN", "s_per_iter": 2.0},
            {"norm": "FRN padding-aware", "s_per_iter": 2.2},
        ]
    )
    assert rows[1]["vs_plain"] == pytest.approx(1.1) and rows[0]["vs_plain"] is None
