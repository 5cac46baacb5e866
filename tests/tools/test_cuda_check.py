"""tools/cuda_check.py: the prepared CUDA check's steps, its CPU smoke run, the kernel
agreement check, failure handling, and benchmark_norm's bandwidth floor.

No GPU here: the smoke run is the same pipeline on the CPU at tiny sizes, so these tests
hold the plumbing (every step runs, is judged and lands in the JSON and SUMMARY.md), not
CUDA's numbers.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from frn_det_tools import cuda_check
from frn_det_tools.cuda_check import (
    CPU_SMOKE,
    GPU,
    Check,
    KernelCase,
    Step,
    StepResult,
    build_steps,
    check_kernels,
    exit_status,
    run_steps,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "cuda_check.py"
TINY_CASES = (
    KernelCase("map", "2d", (2, 3, 5, 6)),
    KernelCase("map, no TLU, learned eps", "2d", (2, 3, 5, 6), tlu=False, learnable_eps=True),
    KernelCase("fc", "1d", (4, 6), learnable_eps=True),
    KernelCase("padded", "padded", (3, 3, 8, 8), sizes=((5, 7), (8, 8), (3, 8))),
    KernelCase("map, fp32 parameters", "2d", (2, 3, 5, 6), params="float32",
               dtypes=("bfloat16",)),
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_the_dry_run_lists_every_step_with_its_command_limit_and_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    assert cuda_check.main(["--dry-run", "--out", str(out)], repo=REPO) == 0
    printed = capsys.readouterr().out
    steps = build_steps(GPU, REPO, out, tmp_path / "work")
    assert [s.name for s in steps] == [
        "environment", "pytest-cuda", "kernels", "data", "train-amp", "train-syncbn",
        "benchmark-norm-fp32", "benchmark-norm-fp16", "benchmark-model",
    ]
    for i, step in enumerate(steps, 1):
        assert f"[{i}/{len(steps)}] {step.name}: " in printed
        assert f"(limit {step.timeout_s:.0f} s)" in printed
        for path in step.outputs:
            assert f"-> {path}" in printed
    assert "benchmark_norm.py --device cuda --dtype float16" in printed
    assert "--size 800 --width 1333 --batch 2" in printed
    assert "benchmark_model.py --device cuda" in printed
    assert "mask_rcnn_R_18_FPN_frn.yaml" in printed and "SOLVER.AMP.ENABLED True" in printed
    assert "mask_rcnn_R_18_FPN_syncbn.yaml" in printed and "--must-run" in printed
    assert not out.exists()  # a dry run writes nothing


def test_the_gpu_run_fits_its_budget_and_the_issue_s_8_minutes():
    assert GPU.budget_s <= 8 * 60 - 20
    names = {s.name for s in build_steps(GPU, REPO, Path("o"), Path("w"))}
    assert names <= set(GPU.timeouts)


def test_the_cpu_smoke_run_passes_end_to_end_and_writes_every_result(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out), "--work", str(work)],
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=420,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    steps = build_steps(CPU_SMOKE, REPO, out, work)
    assert [s["name"] for s in results["steps"]] == [s.name for s in steps]
    assert {s["status"] for s in results["steps"]} == {"passed"}
    for step in steps:
        for path in step.outputs:
            assert path.exists(), path
        assert (work / "logs" / f"{step.name}.log").exists()
    summary = (out / "SUMMARY.md").read_text()
    assert summary in done.stdout  # printed as well as written
    for heading in ("## Steps", "## Targets", "## FRN kernels", "tools/benchmark_norm.py",
                    "tools/benchmark_model.py", "## train_amp", "## train_syncbn"):
        assert heading in summary
    pytest_report = json.loads((out / "pytest_cuda.json").read_text())
    assert pytest_report["outcomes"] and set(pytest_report["outcomes"].values()) == {"skipped"}
    amp = json.loads((out / "train_amp.json").read_text())
    assert amp["autocast"] == "bfloat16" and amp["iterations"] == CPU_SMOKE.train_iters
    syncbn = json.loads((out / "train_syncbn.json").read_text())
    assert syncbn["NaiveSyncBatchNorm_layers"] > 0 and syncbn["precise_bn"]
    norm = json.loads((out / "benchmark_norm_fp32.json").read_text())
    assert norm["meta"]["copy_bandwidth_bytes_per_s"] > 0
    assert all(r["floor_ms"] > 0 and r["vs_floor"] > 0 for r in norm["rows"])


def test_kernel_agreement_holds_on_the_cpu_in_float32_and_bfloat16():
    report = check_kernels("cpu", ["float32", "bfloat16"], TINY_CASES)
    rows = report["rows"]
    assert not report["compile_fallback"]
    assert {(r["dtype"], r["impl"]) for r in rows} == {
        (d, i) for d in ("float32", "bfloat16") for i in ("compiled", "autograd", "reference")
    }
    assert {r["case"] for r in rows} == {c.name for c in TINY_CASES}
    bad = [(r["case"], r["dtype"], r["impl"], r["errors"], r["problem"]) for r in rows
           if not r["ok"]]
    assert not bad
    assert all(max(r["errors"].values()) <= r["tolerance"] for r in rows)


def test_the_kernel_check_fails_a_forward_kernel_that_is_off_by_a_percent(monkeypatch):
    from frn_det.layers import frn

    kernel = frn._forward_kernel

    def off(*args, **kwargs):
        z, r = kernel(*args, **kwargs)
        return z * 1.01, r

    monkeypatch.setattr(frn, "_forward_kernel", off)
    report = check_kernels("cpu", ["float32"], TINY_CASES[:1], impls=("autograd", "reference"))
    verdicts = {r["impl"]: r["ok"] for r in report["rows"]}
    assert verdicts == {"autograd": False, "reference": True}


def _step(name: str, code: str, timeout: float) -> Step:
    return Step(name, name, [sys.executable, "-c", code], timeout)


def test_a_failed_or_timed_out_step_is_recorded_and_the_next_one_still_runs(tmp_path):
    steps = [
        _step("fails", "import sys; sys.exit(3)", 30),
        _step("hangs", "import time; time.sleep(60)", 2),
        _step("passes", "print('fine')", 30),
    ]
    results = run_steps(steps, REPO, tmp_path, budget_s=60, echo=lambda s: None)
    assert [(r.status, r.returncode) for r in results] == [
        ("failed", 3), ("timeout", None), ("passed", 0)
    ]
    assert results[1].seconds < 20
    assert exit_status(CPU_SMOKE, results) == cuda_check.FAILED_EXIT


def test_steps_left_without_budget_are_recorded_as_not_run(tmp_path):
    results = run_steps([_step("late", "pass", 30)], REPO, tmp_path, 0, echo=lambda s: None)
    assert results[0].status == "not run" and "budget" in results[0].error
    assert exit_status(CPU_SMOKE, results) == cuda_check.FAILED_EXIT


def test_a_missed_target_sets_exit_status_3_on_the_gpu_only():
    result = StepResult("bench", "bench", "passed", 1.0, 10.0, "x", "log")
    result.checks = [Check("rows", True), Check("FRN / BN", False, "1.2", "<= 1.00", "target")]
    assert exit_status(GPU, [result]) == cuda_check.TARGET_MISSED_EXIT
    assert exit_status(CPU_SMOKE, [result]) == 0
    result.checks[0].ok = False
    assert exit_status(GPU, [result]) == cuda_check.FAILED_EXIT


def test_the_pytest_step_keeps_only_tests_that_skip_without_cuda(tmp_path):
    test_file = tmp_path / "test_selection.py"
    test_file.write_text(
        "import pytest, torch\n"
        "@pytest.mark.skipif(not torch.cuda.is_available(), reason='fp16 needs CUDA')\n"
        "def test_by_reason():\n    pass\n"
        "@pytest.mark.skipif('not torch.cuda.is_available()')\n"
        "def test_by_condition_string():\n    pass\n"
        "@pytest.mark.skipif(True, reason='needs a display')\n"
        "def test_other_skip():\n    pass\n"
        "def test_plain():\n    pass\n"
    )
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "frn_det_tools.cuda_check", "pytest", "--json", str(report_path),
         "--must-run", "--", str(test_file)],
        capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    names = sorted(k.rsplit("::", 1)[1] for k in report["outcomes"])
    assert names == ["test_by_condition_string", "test_by_reason"]
    step = Step("pytest-cuda", "", [], 1, [report_path])
    checks = {c.what: c.ok for c in cuda_check._judge_pytest(step, "")}
    assert checks == {"CUDA-only tests found": True, "none failed": True,
                      "none skipped on the GPU": False}


def test_every_step_of_both_presets_has_a_time_limit_and_the_gpu_uses_cuda():
    for preset in (GPU, CPU_SMOKE):
        for step in build_steps(preset, REPO, Path("o"), Path("w")):
            assert 0 < step.timeout_s <= 600
    gpu_steps = build_steps(GPU, REPO, Path("o"), Path("w"))
    device_args = [s.argv[s.argv.index("--device") + 1] for s in gpu_steps if "--device" in s.argv]
    assert device_args and set(device_args) == {"cuda"}
    assert GPU.kernel_dtypes == ("float32", "float16", "bfloat16")
    assert GPU.norm_dtypes == ("float32", "float16")


@pytest.fixture(scope="module")
def benchmark_norm():
    spec = importlib.util.spec_from_file_location(
        "frn_benchmark_norm_script", REPO / "tools" / "benchmark_norm.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bytes_moved_is_five_input_passes_plus_statistics_and_parameters(benchmark_norm):
    assert benchmark_norm.bytes_moved((2, 3, 4, 5), torch.float16) == (
        5 * 120 * 2 + 8 * 2 * 3 + 9 * 3 * 2
    )
    rows = [{"dims": "2x3x4x5", "ms": 2.0}]
    benchmark_norm.add_floor(rows, bandwidth=1e9, dtype=torch.float32)
    assert rows[0]["bytes_moved"] == 5 * 120 * 4 + 48 + 108
    assert rows[0]["floor_ms"] == pytest.approx(rows[0]["bytes_moved"] / 1e6)
    assert rows[0]["vs_floor"] == pytest.approx(2.0 / rows[0]["floor_ms"])
    assert benchmark_norm.copy_bandwidth(torch.device("cpu"), 1, 2) > 0


@pytest.mark.parametrize("text", ["p2=2x3", "nope=1x2", "fc=4xq", "fc=0x8"])
def test_dims_refuses_a_bad_shape_naming_the_accepted_names(benchmark_norm, text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="stem, p2, mask, fc"):
        benchmark_norm.parse_dims(text)
    assert benchmark_norm.parse_dims("fc=4x32") == ("fc", (4, 32))


def test_a_rerun_of_some_steps_keeps_the_earlier_results_of_the_others(tmp_path, capsys):
    earlier = [StepResult(n, n, "passed", 1.0, 10.0, "x", "log") for n in ("a", "b", "c")]
    earlier[2].status = "timeout"
    earlier[0].checks = [Check("fine", True)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"steps": [dataclasses.asdict(r) for r in earlier]}))
    rerun = StepResult("c", "c", "passed", 2.0, 10.0, "x", "log")
    merged = cuda_check._merge_earlier(path, [rerun], ["a", "b", "c"])
    assert [(r.name, r.status) for r in merged] == [("a", "passed"), ("b", "passed"),
                                                     ("c", "passed")]
    assert merged[2] is rerun and merged[0].checks[0].ok and "earlier run" in merged[0].error
    assert cuda_check.main(["--dry-run", "--only", "kernels", "benchmark-model"], repo=REPO) == 0
    printed = capsys.readouterr().out
    assert "[1/2] kernels" in printed and "[2/2] benchmark-model" in printed
