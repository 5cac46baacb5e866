"""The prepared CUDA check (issue 14): every check of frn-det that needs a GPU, in one command.

    python tools/cuda_check.py                 # one CUDA GPU: about 5-8 minutes
    python tools/cuda_check.py --dry-run       # the steps, their commands and time limits
    python tools/cuda_check.py --cpu-smoke --out /tmp/cuda --work /tmp/cuda-work
                                               # the same pipeline on the CPU at tiny sizes
    python tools/cuda_check.py --only kernels benchmark-norm-fp32   # a subset, e.g. a rerun

Each step runs in its own process, under its own time limit and the whole run's budget;
a step that fails, times out or is left without budget is recorded and the next one runs.
The steps (``build_steps``):

- ``environment``: versions, the GPU, Triton, detectron2; CUDA must be there (not on the
  CPU smoke run).
- ``pytest-cuda``: the tests that skip without CUDA (a ``skipif`` whose reason or condition
  names CUDA), selected at collection; on a GPU none of them may skip.
- ``kernels``: FRN's compiled, autograd and reference paths, plain and padding-aware,
  forward and backward, in float32, float16 and bfloat16 against a float64 reference of the
  same rounded inputs and against each other (``check_kernels``, tolerances in
  ``TOLERANCES``); a compiled path that fell back to eager fails.
- ``data``: the shapes dataset, generated small into the work folder.
- ``train-amp``: a few iterations of the Shapes FRN demo config with SOLVER.AMP.ENABLED
  (float16 autocast on CUDA), through tools/train_net.py, then its evaluation.
- ``train-syncbn``: the same with the SyncBN config. On one GPU detectron2's launch starts
  no process group and torch's SyncBatchNorm then computes BN (its all-reduce needs a
  world size above 1); the step checks that torch's SyncBatchNorm is what was built, that
  it trains and that precise BN runs.
- ``benchmark-norm-fp32`` / ``-fp16``: tools/benchmark_norm.py, with its copy bandwidth
  and bandwidth floor.
- ``benchmark-model``: tools/benchmark_model.py, Mask R-CNN R-50-FPN per norm.

Results go to ``--out`` (default docs/cuda/): one JSON per step that makes one,
results.json (every step and check) and SUMMARY.md, which is also printed. Logs and training
folders go to ``--work`` (default output/cuda_check/).

Exit status: 0 when every step passed and (on a GPU) every performance target was met;
1 when a step failed (an error, a timeout, numbers that disagree, a kernel that did not
compile, no budget left); 3 when every step passed but a performance target was missed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from frn_det_tools.markdown import markdown_table

__all__ = [
    "CPU_SMOKE",
    "GPU",
    "TOLERANCES",
    "Check",
    "KernelCase",
    "Preset",
    "Step",
    "build_steps",
    "check_kernels",
    "main",
    "run_check",
]

FAILED_EXIT = 1
TARGET_MISSED_EXIT = 3

# Largest |impl - float64 reference| over the largest |float64 reference| of each output and
# gradient. Every path computes in float32 and rounds once to the input's dtype, so a few
# units in the last place of the largest value are expected: 8 of them for float16 (2^-11)
# and bfloat16 (2^-8); 1e-5 for float32, where reductions in another order differ by more
# than one unit over tens of thousands of terms.
TOLERANCES: dict[str, float] = {"float32": 1e-5, "float16": 8 * 2.0**-11, "bfloat16": 8 * 2.0**-8}
# Elements whose pre-TLU value is this close to tau (relative to 1 + |tau|) are left out of
# the input-gradient comparison: an fp32 rounding difference may put them on either side of
# the threshold, which switches their gradient between the two branches.
TIE_MARGIN = 1e-4
FALLBACK_PATTERNS = ("FRN: torch.compile failed", "FRN: no compiler toolchain")


# ----------------------------------------------------------------------------------------
# What runs, and at which sizes


@dataclasses.dataclass(frozen=True)
class KernelCase:
    """One FRN configuration the kernels are compared on.

    form: "2d" (FilterResponseNorm2d, (N, C, H, W)), "1d" (FilterResponseNorm1d, (N, C)) or
        "padded" (PaddingAwareFilterResponseNorm2d inside ``padding.image_sizes(sizes,
        shape[2:])``).
    params: "input" (parameters in the input's dtype) or "float32" (float32 parameters with
        low-precision input, as SOLVER.AMP trains).
    dtypes: the dtypes it runs in, of those the run asks for; () for all of them.
    """

    name: str
    form: str
    shape: tuple[int, ...]
    tlu: bool = True
    learnable_eps: bool = False
    params: str = "input"
    channels_last: bool = False
    sizes: tuple[tuple[int, int], ...] = ()
    dtypes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Preset:
    """Everything that sets how much a run does: ``GPU`` and ``CPU_SMOKE`` below.

    timeouts: seconds per step (by step name); the whole run also stops starting steps
    once ``budget_s`` is spent. norm_dims: ``--dims NAME=AxB...`` overrides for
    tools/benchmark_norm.py (empty: its detection shapes). model_args: the arguments of
    tools/benchmark_model.py after ``--device``. targets_count: whether a missed performance
    target changes the exit status (not on the CPU).
    """

    name: str
    device: str
    budget_s: float
    timeouts: dict[str, float]
    pytest_paths: tuple[str, ...]
    pytest_must_run: bool
    kernel_dtypes: tuple[str, ...]
    kernel_cases: tuple[KernelCase, ...]
    num_train: int
    num_val: int
    train_iters: int
    train_ims: int
    train_workers: int
    precise_bn_iters: int
    norm_dtypes: tuple[str, ...]
    norm_dims: tuple[str, ...]
    norm_repeats: int
    norm_warmup: int
    bandwidth_mib: int
    model_args: tuple[str, ...]
    targets_count: bool


_PADDED_SIZES = ((160, 224), (120, 200), (96, 128))

GPU = Preset(
    name="gpu",
    device="cuda",
    budget_s=450,
    timeouts={
        "environment": 60,
        "pytest-cuda": 120,
        "kernels": 180,
        "data": 60,
        "train-amp": 120,
        "train-syncbn": 100,
        "benchmark-norm-fp32": 100,
        "benchmark-norm-fp16": 80,
        "benchmark-model": 180,
    },
    pytest_paths=("tests",),
    pytest_must_run=True,
    kernel_dtypes=("float32", "float16", "bfloat16"),
    kernel_cases=(
        KernelCase("conv map (p2-sized)", "2d", (2, 64, 200, 304)),
        KernelCase("RoI map", "2d", (128, 256, 14, 14)),
        KernelCase("conv map, no TLU", "2d", (2, 64, 100, 152), tlu=False,
                   dtypes=("float32", "float16")),
        KernelCase("conv map, learned eps, fp32 parameters (AMP)", "2d", (2, 64, 100, 152),
                   learnable_eps=True, params="float32", dtypes=("float16", "bfloat16")),
        KernelCase("conv map, channels_last", "2d", (2, 64, 100, 152), channels_last=True,
                   dtypes=("float32",)),
        KernelCase("fc features, learned eps", "1d", (512, 1024), learnable_eps=True),
        KernelCase("padded batch", "padded", (3, 64, 160, 224), sizes=_PADDED_SIZES),
        KernelCase("padded batch, no TLU", "padded", (3, 64, 160, 224), tlu=False,
                   sizes=_PADDED_SIZES, dtypes=("float32",)),
    ),
    num_train=64,
    num_val=32,
    train_iters=20,
    train_ims=4,
    train_workers=4,
    precise_bn_iters=20,
    norm_dtypes=("float32", "float16"),
    norm_dims=(),
    norm_repeats=30,
    norm_warmup=5,
    bandwidth_mib=1024,
    # COCO-sized 800 x 1333 images, the second 3/4 as wide (--ragged), so the batch is
    # padded as COCO batches are.
    model_args=(
        "--size", "800", "--width", "1333", "--batch", "2", "--iters", "8", "--warmup", "2",
        "--norms", "BN", "GN", "SyncBN", "FRN", "--padding-aware", "FRN", "--ragged",
    ),
    targets_count=True,
)

CPU_SMOKE = Preset(
    name="cpu-smoke",
    device="cpu",
    budget_s=300,
    timeouts={
        "environment": 60,
        "pytest-cuda": 60,
        "kernels": 120,
        "data": 60,
        "train-amp": 90,
        "train-syncbn": 90,
        "benchmark-norm-fp32": 60,
        "benchmark-norm-fp16": 60,
        "benchmark-model": 90,
    },
    pytest_paths=("tests/layers/test_frn.py",),
    pytest_must_run=False,
    kernel_dtypes=("float32", "bfloat16"),
    kernel_cases=(
        KernelCase("conv map", "2d", (2, 4, 6, 8)),
        KernelCase("fc features, learned eps", "1d", (4, 8), learnable_eps=True,
                   dtypes=("float32",)),
        KernelCase("padded batch", "padded", (3, 4, 8, 8), sizes=((5, 7), (8, 8), (3, 8)),
                   dtypes=("float32",)),
    ),
    num_train=4,
    num_val=2,
    train_iters=2,  # detectron2's scheduler needs a step before the last iteration
    train_ims=2,
    train_workers=0,
    precise_bn_iters=1,
    norm_dtypes=("float32",),
    norm_dims=("stem=2x32x8x8", "p2=2x32x8x12", "mask=3x32x4x4", "fc=4x32"),
    norm_repeats=1,
    norm_warmup=0,
    bandwidth_mib=4,
    model_args=(
        "--config", "Shapes/mask_rcnn_R_18_FPN_{norm}.yaml", "--size", "64", "--batch", "1",
        "--boxes", "1", "--iters", "1", "--warmup", "0", "--norms", "BN", "GN", "FRN",
        "--impl", "autograd", "--no-rss",
        # fewer, narrower RoIs and channels: the smoke run checks plumbing, not speed
        "--opts", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "16", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32",
        "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    ),
    targets_count=False,
)

PRESETS = {p.name: p for p in (GPU, CPU_SMOKE)}


@dataclasses.dataclass
class Check:
    """One verdict: a correctness check (``kind`` "check") or a performance target."""

    what: str
    ok: bool
    value: str = ""
    target: str = ""
    kind: str = "check"


@dataclasses.dataclass
class Step:
    """One process of the run: ``argv`` under ``timeout_s``, judged by ``evaluate``.

    evaluate(step, log_text) returns the step's checks once the process has exited with
    status 0 (it may read the step's ``outputs``).
    """

    name: str
    title: str
    argv: list[str]
    timeout_s: float
    outputs: list[Path] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    evaluate: Callable[[Step, str], list[Check]] | None = None


# ----------------------------------------------------------------------------------------
# The steps


def build_steps(preset: Preset, repo: Path, out: Path, work: Path) -> list[Step]:
    """The run's steps, in order, for ``preset`` in the checkout ``repo``; JSON to ``out``,
    logs, datasets and training folders under ``work``."""
    py = sys.executable
    me = [py, "-m", "frn_det_tools.cuda_check"]
    datasets = work / "datasets"
    steps = [
        Step(
            "environment",
            "versions, GPU, Triton, detectron2",
            me + ["environment", "--json", str(out / "environment.json")],
            preset.timeouts["environment"],
            [out / "environment.json"],
            evaluate=lambda s, log: _judge_environment(s, preset),
        ),
        Step(
            "pytest-cuda",
            "the tests that skip without CUDA",
            me + ["pytest", "--json", str(out / "pytest_cuda.json")]
            + (["--must-run"] if preset.pytest_must_run else [])
            + ["--"] + [str(repo / p) for p in preset.pytest_paths],
            preset.timeouts["pytest-cuda"],
            [out / "pytest_cuda.json"],
            evaluate=_judge_pytest,
        ),
        Step(
            "kernels",
            "FRN compiled/autograd/reference, plain and padding-aware, fwd+bwd, per dtype",
            me + ["kernels", "--json", str(out / "kernels.json"), "--preset", preset.name],
            preset.timeouts["kernels"],
            [out / "kernels.json"],
            evaluate=_judge_kernels,
        ),
        Step(
            "data",
            f"shapes dataset ({preset.num_train} train / {preset.num_val} val images)",
            [py, "-m", "frn_det.data.shapes", "--root", str(datasets),
             "--num-train", str(preset.num_train), "--num-val", str(preset.num_val)],
            preset.timeouts["data"],
        ),
    ]
    for name, config, opts in (
        ("train-amp", "mask_rcnn_R_18_FPN_frn.yaml", ["SOLVER.AMP.ENABLED", "True"]),
        ("train-syncbn", "mask_rcnn_R_18_FPN_syncbn.yaml",
         ["TEST.PRECISE_BN.NUM_ITER", str(preset.precise_bn_iters)]),
    ):
        steps.append(_train_step(preset, repo, out, work, name, config, opts))
    for dtype in preset.norm_dtypes:
        short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]
        json_path = out / f"benchmark_norm_{short}.json"
        steps.append(
            Step(
                f"benchmark-norm-{short}",
                f"tools/benchmark_norm.py, {dtype}",
                [py, str(repo / "tools" / "benchmark_norm.py"), "--device", preset.device,
                 "--dtype", dtype, "--repeats", str(preset.norm_repeats),
                 "--warmup", str(preset.norm_warmup),
                 "--bandwidth-mib", str(preset.bandwidth_mib), "--json", str(json_path)]
                + [a for d in preset.norm_dims for a in ("--dims", d)],
                preset.timeouts.get(f"benchmark-norm-{short}", 60),
                [json_path],
                evaluate=_judge_benchmark_norm,
            )
        )
    json_path = out / "benchmark_model.json"
    steps.append(
        Step(
            "benchmark-model",
            "tools/benchmark_model.py, Mask R-CNN R-50-FPN per norm",
            # --json before the preset's arguments: --opts, if any, has to come last
            [py, str(repo / "tools" / "benchmark_model.py"), "--device", preset.device,
             "--json", str(json_path), *preset.model_args],
            preset.timeouts["benchmark-model"],
            [json_path],
            evaluate=_judge_benchmark_model,
        )
    )
    return steps


def _train_step(
    preset: Preset, repo: Path, out: Path, work: Path, name: str, config: str, opts: list[str]
) -> Step:
    iters = preset.train_iters
    output_dir = work / name
    argv = [
        sys.executable, str(repo / "tools" / "train_net.py"),
        "--config-file", str(repo / "configs" / "Shapes" / config), "--num-gpus", "1",
        "MODEL.DEVICE", preset.device,
        "SOLVER.MAX_ITER", str(iters),
        "SOLVER.STEPS", f"({max(1, (iters * 4) // 5)},)",
        "SOLVER.WARMUP_ITERS", str(max(1, iters // 2)),
        "SOLVER.IMS_PER_BATCH", str(preset.train_ims),
        "DATALOADER.NUM_WORKERS", str(preset.train_workers),
        *opts,
        "OUTPUT_DIR", str(output_dir),
    ]
    json_path = out / f"{name.replace('-', '_')}.json"
    return Step(
        name,
        f"tools/train_net.py {config}, {iters} iterations, " + " ".join(opts),
        argv,
        preset.timeouts[name],
        [json_path],
        env={"DETECTRON2_DATASETS": str(work / "datasets")},
        evaluate=lambda s, log: _judge_training(s, log, preset, output_dir, json_path),
    )


# ----------------------------------------------------------------------------------------
# Judging each step's results


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _judge_environment(step: Step, preset: Preset) -> list[Check]:
    env = _read_json(step.outputs[0])
    checks = [Check("detectron2 imports", env.get("detectron2") is not None,
                    str(env.get("detectron2")))]
    if preset.device == "cuda":
        checks.append(Check("CUDA available", bool(env.get("cuda_available")),
                            str(env.get("gpu"))))
        checks.append(Check("Triton available (compiled FRN kernels)",
                            bool(env.get("triton")), str(env.get("triton"))))
    return checks


def _judge_pytest(step: Step, log: str) -> list[Check]:
    report = _read_json(step.outputs[0])
    outcomes = report["outcomes"]
    counts = {k: sum(1 for v in outcomes.values() if v == k) for k in ("passed", "failed",
                                                                        "skipped")}
    checks = [
        Check("CUDA-only tests found", len(outcomes) > 0, f"{len(outcomes)} selected"),
        Check("none failed", counts["failed"] == 0 and report["exit_code"] in (0, 5),
              f"{counts} (pytest exit {report['exit_code']})"),
    ]
    if report["must_run"]:
        checks.append(Check("none skipped on the GPU", counts["skipped"] == 0,
                            f"{counts['skipped']} skipped"))
    return checks


def _judge_kernels(step: Step, log: str) -> list[Check]:
    report = _read_json(step.outputs[0])
    checks = []
    for row in report["rows"]:
        worst = max(row["errors"].values())
        checks.append(
            Check(
                f"{row['case']} {row['dtype']} {row['impl']}",
                row["ok"],
                f"max error {worst:.2e}" + (f"; {row['problem']}" if row.get("problem") else ""),
                f"<= {row['tolerance']:.1e}",
            )
        )
    checks.append(Check("compiled path compiled (no fallback to eager)",
                        not report["compile_fallback"], "; ".join(report["warnings"])[:300]))
    return checks


def _fallback_check(log: str) -> Check:
    hits = [line for line in log.splitlines() if any(p in line for p in FALLBACK_PATTERNS)]
    return Check("compiled FRN kernels did not fall back to eager", not hits,
                 hits[0][:300] if hits else "")


def _metrics_lines(path: Path) -> list[dict]:
    lines = []
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                lines.append(json.loads(line))
    return lines


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _judge_training(
    step: Step, step_log: str, preset: Preset, output_dir: Path, json_path: Path
) -> list[Check]:
    lines = _metrics_lines(output_dir / "metrics.json")
    train = [m for m in lines if "total_loss" in m]
    evals = [m for m in lines if "bbox/AP" in m]
    log = (output_dir / "log.txt").read_text() if (output_dir / "log.txt").exists() else ""
    last = train[-1] if train else {}
    times = [m["time"] for m in train if _finite(m.get("time"))]
    precision = re.search(r"mixed precision: the forward pass under (\w+) autocast", log)
    record = {
        "config": step.argv[step.argv.index("--config-file") + 1],
        "device": preset.device,
        "iterations": last.get("iteration", -1) + 1,
        "total_loss": [m.get("total_loss") for m in train],
        "s_per_iter": statistics.median(times) if times else None,
        "box_AP": evals[-1].get("bbox/AP") if evals else None,
        "mask_AP": evals[-1].get("segm/AP") if evals else None,
        "autocast": precision.group(1) if precision else None,
        "torch_SyncBatchNorm_layers": len(re.findall(r"(?<!Naive)SyncBatchNorm\(", log)),
        "NaiveSyncBatchNorm_layers": len(re.findall(r"NaiveSyncBatchNorm\(", log)),
        "precise_bn": bool(re.search(r"precise-bn", log, re.IGNORECASE)),
    }
    json_path.write_text(json.dumps(record, indent=2))
    checks = [
        Check("trained every iteration", record["iterations"] == preset.train_iters,
              f"{record['iterations']} of {preset.train_iters}"),
        Check("losses finite", bool(train) and all(_finite(m.get("total_loss")) for m in train),
              f"total_loss {record['total_loss'][-1:]}"),
        Check("evaluated (box and mask AP)", record["box_AP"] is not None
              and record["mask_AP"] is not None,
              f"box AP {record['box_AP']}, mask AP {record['mask_AP']}"),
    ]
    if "SOLVER.AMP.ENABLED" in step.argv:
        expected = "float16" if preset.device == "cuda" else "bfloat16"
        checks.append(Check(f"{expected} autocast", record["autocast"] == expected,
                            str(record["autocast"])))
    else:
        if preset.device == "cuda":
            checks.append(Check("torch.nn.SyncBatchNorm built on CUDA",
                                record["torch_SyncBatchNorm_layers"] > 0,
                                f"{record['torch_SyncBatchNorm_layers']} layers"))
        checks.append(Check("precise BN ran", record["precise_bn"]))
    return checks + [_fallback_check(step_log)]


def _judge_benchmark_norm(step: Step, log: str) -> list[Check]:
    report = _read_json(step.outputs[0])
    rows = report["rows"]
    checks = [Check("rows measured", bool(rows), f"{len(rows)} rows"), _fallback_check(log)]
    dtype = report["meta"]["dtype"]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        by = {r["method"]: r for r in rows if r["shape"] == shape}
        frn = by.get("FRN compiled")
        if frn is None:
            checks.append(Check(f"{shape}: FRN compiled row", False))
            continue
        for ref in ("BN+ReLU", "GN+ReLU"):
            if ref in by:
                ratio = frn["ms"] / by[ref]["ms"]
                checks.append(Check(f"{dtype} {shape}: FRN+TLU fwd+bwd / {ref}", ratio <= 1.0,
                                    f"{ratio:.2f}", "<= 1.00", "target"))
        if frn.get("vs_floor") is not None:
            checks.append(Check(f"{dtype} {shape}: FRN+TLU fwd+bwd / bandwidth floor",
                                frn["vs_floor"] <= 1.5, f"{frn['vs_floor']:.2f}", "<= 1.50",
                                "target"))
        aware = by.get("FRN compiled padding-aware")
        if aware is not None:
            ratio = aware["ms"] / frn["ms"]
            checks.append(Check(f"{dtype} {shape}: padding-aware FRN / plain FRN",
                                ratio <= 1.15, f"{ratio:.2f}", "<= 1.15", "target"))
    return checks


def _judge_benchmark_model(step: Step, log: str) -> list[Check]:
    rows = _read_json(step.outputs[0])["rows"]
    checks = [Check("rows measured", bool(rows), f"{len(rows)} rows"), _fallback_check(log)]
    for r in rows:
        if not r["norm"].startswith("FRN"):
            continue
        if r.get("vs_plain") is not None:
            checks.append(Check(f"{r['norm']}: s/iter / plain FRN", r["vs_plain"] <= 1.10,
                                f"{r['vs_plain']:.2f}", "<= 1.10", "target"))
            continue
        if r.get("vs_BN") is not None:
            checks.append(Check(f"{r['norm']}: s/iter / BN", r["vs_BN"] <= 1.05,
                                f"{r['vs_BN']:.2f}", "<= 1.05", "target"))
        if r.get("vs_GN") is not None:
            checks.append(Check(f"{r['norm']}: s/iter / GN", r["vs_GN"] <= 1.0,
                                f"{r['vs_GN']:.2f}", "<= 1.00", "target"))
        if r.get("peak_vs_GN") is not None:
            checks.append(Check(f"{r['norm']}: peak memory / GN", r["peak_vs_GN"] <= 1.0,
                                f"{r['peak_vs_GN']:.2f}", "<= 1.00", "target"))
    return checks


# ----------------------------------------------------------------------------------------
# Running the steps


@dataclasses.dataclass
class StepResult:
    """What became of one step."""

    name: str
    title: str
    status: str  # "passed", "failed", "timeout", "not run"
    seconds: float
    timeout_s: float
    command: str
    log: str
    returncode: int | None = None
    error: str = ""
    checks: list[Check] = dataclasses.field(default_factory=list)


def _run_process(step: Step, log_path: Path, timeout: float, repo: Path) -> tuple[int | None, bool]:
    """Run ``step.argv`` in its own process group; returns (exit status, timed out)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(step.env)
    with open(log_path, "w") as log:
        log.write("$ " + _shell(step.argv) + "\n")
        log.flush()
        proc = subprocess.Popen(
            step.argv, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            # The whole group: data-loader workers and compile workers too.
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=wait)
                    break
            return None, True


def _shell(argv: Sequence[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def run_steps(
    steps: list[Step], repo: Path, work: Path, budget_s: float, echo: Callable[[str], None]
) -> list[StepResult]:
    """Run ``steps`` in order, each under min(its limit, what is left of ``budget_s``)."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget_s
    results = []
    for i, step in enumerate(steps, 1):
        log_path = logs / f"{step.name}.log"
        left = deadline - time.monotonic()
        timeout = min(step.timeout_s, left)
        result = StepResult(step.name, step.title, "not run", 0.0, step.timeout_s,
                            _shell(step.argv), str(log_path))
        results.append(result)
        if timeout < min(step.timeout_s, 10):
            result.error = f"budget of {budget_s:.0f} s spent ({max(left, 0):.0f} s left)"
            echo(f"[{i}/{len(steps)}] {step.name}: not run, {result.error}")
            continue
        echo(f"[{i}/{len(steps)}] {step.name}: {step.title} (limit {timeout:.0f} s)")
        for path in step.outputs:
            path.unlink(missing_ok=True)
        start = time.monotonic()
        returncode, timed_out = _run_process(step, log_path, timeout, repo)
        result.seconds = time.monotonic() - start
        result.returncode = returncode
        log = log_path.read_text(errors="replace")
        if timed_out:
            result.status, result.error = "timeout", f"killed after {timeout:.0f} s"
        elif returncode != 0:
            result.status, result.error = "failed", f"exit status {returncode}"
        else:
            result.status = "passed"
            if step.evaluate is not None:
                try:
                    result.checks = step.evaluate(step, log)
                except Exception as err:  # a missing or malformed output file
                    result.status, result.error = "failed", f"{type(err).__name__}: {err}"
            if any(not c.ok for c in result.checks if c.kind == "check"):
                result.status = "failed"
                result.error = "; ".join(c.what for c in result.checks
                                         if c.kind == "check" and not c.ok)[:500]
        missed = [c for c in result.checks if c.kind == "target" and not c.ok]
        echo(f"      {result.status} in {result.seconds:.0f} s"
             + (f": {result.error}" if result.error else "")
             + (f"; {len(missed)} target(s) missed" if missed else ""))
        if result.status in ("failed", "timeout"):
            for line in log.splitlines()[-15:]:
                echo(f"      | {line[:200]}")
    return results


# ----------------------------------------------------------------------------------------
# Summary


def _environment(out: Path) -> dict:
    path = out / "environment.json"
    return _read_json(path) if path.exists() else {}


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_markdown(preset: Preset, results: list[StepResult], out: Path) -> str:
    """SUMMARY.md: the machine, each step, each target, the kernel and benchmark tables."""
    env = _environment(out)
    lines = [
        f"# CUDA check ({preset.name})",
        "",
        f"- device: {env.get('gpu') or preset.device}",
        f"- torch {env.get('torch', '?')}, CUDA {env.get('cuda_version')}, "
        f"cuDNN {env.get('cudnn')}, Triton {env.get('triton')}, Python {env.get('python')}",
        f"- run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{sum(r.seconds for r in results):.0f} s of steps (budget {preset.budget_s:.0f} s)",
        "",
        "## Steps",
        "",
    ]
    steps = [
        [r.name, r.status, f"{r.seconds:.0f}", f"{r.timeout_s:.0f}", r.error.replace("|", "/")]
        for r in results
    ]
    lines += _markdown_table(steps, ["step", "status", "s", "limit s", "notes"], "llrrl")
    targets = [(r.name, c) for r in results for c in r.checks if c.kind == "target"]
    lines += ["", "## Targets", ""]
    if not preset.targets_count:
        lines += ["CPU smoke run: the targets are GPU targets, shown here, not counted.", ""]
    if targets:
        rows = [
            [n, c.what, str(c.value), str(c.target), "met" if c.ok else "MISSED"]
            for n, c in targets
        ]
        lines += _markdown_table(rows, ["step", "target", "value", "wanted", "met"], "llrrl")
    else:
        lines.append("No target was measured.")
    lines += ["", "## Failed checks", ""]
    failed = [(r.name, c) for r in results for c in r.checks if c.kind == "check" and not c.ok]
    failed += [(r.name, Check(r.error, False)) for r in results
               if r.status != "passed" and not r.checks]
    lines += [f"- {n}: {c.what} {c.value}".rstrip() for n, c in failed] or ["None."]
    lines += _kernel_section(out) + _norm_section(out, preset) + _model_section(out)
    lines += _training_section(out)
    return "\n".join(lines) + "\n"


def _markdown_table(rows: Sequence[Sequence[str]], headers: Sequence[str], align: str) -> list[str]:
    return markdown_table(rows, headers, align).splitlines()


def _kernel_section(out: Path) -> list[str]:
    path = out / "kernels.json"
    if not path.exists():
        return []
    report = _read_json(path)
    lines = [
        "", "## FRN kernels against a float64 reference", "",
        "Error: max |path - float64 reference| / max |float64 reference| over the output and "
        "every gradient (the worst of them; also against the reference path in the same "
        "dtype). Tolerances: " + ", ".join(f"{k} {v:.1e}" for k, v in TOLERANCES.items()) + ".",
        "",
    ]
    rows = []
    for row in report["rows"]:
        e = row["errors"]
        params = max([v for k, v in e.items() if k.startswith("d_") and k != "d_x"] or [0.0])
        rows.append([
            row["case"], row["dtype"], row["impl"], f"{e.get('out', 0):.1e}",
            f"{e.get('d_x', 0):.1e}", f"{params:.1e}", f"{row.get('vs_reference_path', 0):.1e}",
            "yes" if row["ok"] else "NO",
        ])  # fmt: skip
    headers = ["case", "dtype", "path", "output", "d input", "d params", "vs reference path"]
    return lines + _markdown_table(rows, [*headers, "ok"], "lllrrrrl")


def _norm_section(out: Path, preset: Preset) -> list[str]:
    lines = []
    for dtype in preset.norm_dtypes:
        short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]
        path = out / f"benchmark_norm_{short}.json"
        if not path.exists():
            continue
        report = _read_json(path)
        meta, rows = report["meta"], report["rows"]
        bandwidth = meta.get("copy_bandwidth_bytes_per_s")
        lines += [
            "", f"## tools/benchmark_norm.py, {dtype}", "",
            f"Median of {meta.get('repeats')} runs; copy bandwidth "
            f"{_fmt(bandwidth and bandwidth / 1e9, '.0f')} GB/s; floor: "
            f"{meta.get('byte_model', 'not reported')}.",
            "",
        ]
        table = [
            [
                f"{r['shape']} {r['dims']}", r["method"], f"{r['ms']:.3f}", f"{r['vs_bn']:.2f}",
                _fmt(r.get("floor_ms"), ".3f"), _fmt(r.get("vs_floor"), ".2f"),
                _fmt(None if r.get("peak_bytes") is None else r["peak_bytes"] / 2**20, ".1f"),
            ]  # fmt: skip
            for r in rows
        ]
        headers = ["shape", "method", "fwd+bwd ms", "x BN+ReLU", "floor ms", "x floor"]
        lines += _markdown_table(table, [*headers, "peak MiB"], "llrrrrr")
    return lines


def _model_section(out: Path) -> list[str]:
    path = out / "benchmark_model.json"
    if not path.exists():
        return []
    report = _read_json(path)
    spec = report["meta"].get("spec", {})
    lines = [
        "", f"## tools/benchmark_model.py ({spec.get('config')})", "",
        f"{spec.get('batch')} images of {spec.get('size')} x {spec.get('size')}"
        + (", the last 3/4 as wide (ragged)" if spec.get("ragged") else "")
        + f", median of {spec.get('iters')} iterations after {spec.get('warmup')} warm-up.",
        "",
    ]
    rows = []
    for r in report["rows"]:
        peak = r.get("peak_bytes")
        rows.append([
            r["norm"], f"{r['s_per_iter']:.3f}", _fmt(r.get("vs_BN"), ".2f"),
            _fmt(r.get("vs_GN"), ".2f"), _fmt(r.get("vs_plain"), ".2f"),
            f"{r['first_iter_s']:.1f}", _fmt(None if peak is None else peak / 2**20, ".0f"),
            _fmt(r.get("peak_vs_GN"), ".2f"),
        ])  # fmt: skip
    headers = ["norm", "s/iter", "x BN", "x GN", "x plain", "first iter s", "peak MiB"]
    return lines + _markdown_table(rows, [*headers, "peak x GN"], "lrrrrrrr")


def _training_section(out: Path) -> list[str]:
    lines = []
    for name in ("train_amp", "train_syncbn"):
        path = out / f"{name}.json"
        if not path.exists():
            continue
        r = _read_json(path)
        losses = [v for v in r["total_loss"] if _finite(v)] or [None]
        lines += [
            "", f"## {name}: {Path(r['config']).name}", "",
            f"- {r['iterations']} iterations, total_loss {_fmt(losses[0], '.3f')}"
            f" -> {_fmt(losses[-1], '.3f')}, "
            f"{_fmt(r['s_per_iter'], '.3f')} s/iteration; box AP {r['box_AP']}, "
            f"mask AP {r['mask_AP']} (after a few iterations: evaluation runs, not a result)",
            f"- autocast: {r['autocast']}; torch SyncBatchNorm layers: "
            f"{r['torch_SyncBatchNorm_layers']}, NaiveSyncBatchNorm layers: "
            f"{r['NaiveSyncBatchNorm_layers']}; precise BN: {r['precise_bn']}",
        ]
    return lines


def _merge_earlier(
    path: Path, results: list[StepResult], order: list[str]
) -> list[StepResult]:
    """``results`` plus the earlier run's (``path``, results.json) for the steps not run now,
    in the run's step order: a rerun of some steps completes, not replaces, the record."""
    if not path.exists():
        return results
    by_name = {}
    for record in _read_json(path)["steps"]:
        record = dict(record, checks=[Check(**c) for c in record["checks"]])
        earlier = StepResult(**record)
        earlier.error = (earlier.error + " (earlier run)").strip()
        by_name[earlier.name] = earlier
    by_name.update({r.name: r for r in results})
    return [by_name[n] for n in order if n in by_name]


def exit_status(preset: Preset, results: list[StepResult]) -> int:
    """0, FAILED_EXIT or TARGET_MISSED_EXIT (module docstring)."""
    failed = [c for r in results for c in r.checks if c.kind == "check" and not c.ok]
    if failed or any(r.status != "passed" for r in results):
        return FAILED_EXIT
    missed = any(not c.ok for r in results for c in r.checks if c.kind == "target")
    return TARGET_MISSED_EXIT if missed and preset.targets_count else 0


def run_check(
    preset: Preset,
    repo: Path,
    out: Path,
    work: Path,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> int:
    """Run the steps of ``preset`` (all, or ``only`` ones, less ``skip``), write the JSON,
    results.json and SUMMARY.md to ``out``, print the summary; returns the exit status."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    all_steps = build_steps(preset, repo, out, work)
    steps = [s for s in all_steps if (not only or s.name in only) and s.name not in skip]
    results = run_steps(steps, repo, work, preset.budget_s, echo)
    if len(steps) < len(all_steps):
        results = _merge_earlier(out / "results.json", results, [s.name for s in all_steps])
    status = exit_status(preset, results)
    summary = summary_markdown(preset, results, out)
    (out / "SUMMARY.md").write_text(summary)
    record = {
        "preset": dataclasses.asdict(preset),
        "exit_status": status,
        "steps": [dataclasses.asdict(r) for r in results],
    }
    (out / "results.json").write_text(json.dumps(record, indent=2, default=str))
    echo("")
    echo(summary)
    echo(f"Results in {out} (SUMMARY.md, results.json); logs in {work / 'logs'}; "
         f"exit status {status}")
    return status


# ----------------------------------------------------------------------------------------
# Workers: what the steps run in their own processes


def environment_report() -> dict[str, Any]:
    """Versions and the device: what SUMMARY.md's header shows."""
    import torch

    report: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": None,
        "triton": None,
        "detectron2": None,
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = (f"{props.name}, compute capability {props.major}.{props.minor}, "
                         f"{props.total_memory / 2**30:.0f} GiB, "
                         f"{props.multi_processor_count} SMs")
    with contextlib.suppress(ImportError):
        import triton

        report["triton"] = triton.__version__
    with contextlib.suppress(ImportError):
        import detectron2

        report["detectron2"] = f"{detectron2.__version__} at {Path(detectron2.__file__).parent}"
    import frn_det  # noqa: F401  (registers the components: fails here, not in a later step)

    return report


class _CudaOnlyTests:
    """pytest plugin: keeps the tests that skip without CUDA and records their outcomes."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    @staticmethod
    def needs_cuda(item: Any) -> bool:
        """A ``skipif`` marker whose reason or string condition names CUDA."""
        for mark in item.iter_markers("skipif"):
            texts = [str(mark.kwargs.get("reason", ""))]
            texts += [a for a in mark.args if isinstance(a, str)]
            texts += [str(mark.kwargs.get("condition", ""))]
            if any("cuda" in t.lower() for t in texts):
                return True
        return item.get_closest_marker("cuda") is not None

    def pytest_collection_modifyitems(self, config: Any, items: list) -> None:
        keep = [i for i in items if self.needs_cuda(i)]
        config.hook.pytest_deselected(items=[i for i in items if not self.needs_cuda(i)])
        items[:] = keep

    def pytest_runtest_logreport(self, report: Any) -> None:
        # the call's outcome, or a setup/teardown that failed or skipped; a failure sticks
        relevant = report.when == "call" or report.outcome != "passed"
        if relevant and self.outcomes.get(report.nodeid) != "failed":
            self.outcomes[report.nodeid] = report.outcome


def cuda_test_files(paths: Sequence[str]) -> list[str]:
    """The test files under ``paths`` whose text mentions CUDA next to a skip (the only
    ones worth collecting)."""
    files = []
    for p in map(Path, paths):
        for f in sorted(p.rglob("test_*.py")) if p.is_dir() else [p]:
            text = f.read_text(errors="replace").lower()
            if "cuda" in text and "skip" in text:
                files.append(str(f))
    return files


def run_cuda_tests(paths: Sequence[str], must_run: bool) -> dict[str, Any]:
    """pytest on the CUDA-only tests under ``paths``; outcome per node id."""
    import pytest

    plugin = _CudaOnlyTests()
    files = cuda_test_files(paths)
    code = pytest.main(["-q", "-rs", "-p", "no:cacheprovider", *files], plugins=[plugin])
    return {"files": files, "exit_code": int(code), "must_run": must_run,
            "outcomes": plugin.outcomes}


def _randomised(module: Any, seed: int) -> Any:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == "learned_eps":
                p.fill_(0.25)  # a well-conditioned eps: (N, C) features need one
            else:
                base = 1.0 if name == "weight" else 0.0
                p.copy_(base + 0.5 * torch.randn(p.shape, generator=gen))
    return module


def _build_case(case: KernelCase) -> Any:
    from frn_det.layers.frn import (
        FilterResponseNorm1d,
        FilterResponseNorm2d,
        PaddingAwareFilterResponseNorm2d,
    )

    classes = {"2d": FilterResponseNorm2d, "1d": FilterResponseNorm1d,
               "padded": PaddingAwareFilterResponseNorm2d}
    if case.form not in classes:
        raise ValueError(f"KernelCase {case.name!r}: form {case.form!r}, accepted {list(classes)}")
    return classes[case.form](case.shape[1], learnable_eps=case.learnable_eps, tlu=case.tlu)


def _scope(case: KernelCase) -> Any:
    from frn_det.layers import padding

    if case.form != "padded":
        return contextlib.nullcontext()
    return padding.image_sizes(list(case.sizes), case.shape[2:])


def _forward_backward(module: Any, x: Any, gz: Any, impl: str, case: KernelCase) -> dict:
    """Output and gradients (x, then each parameter) of module(x) under ``impl``."""
    import torch

    from frn_det.layers.frn import frn_impl

    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with frn_impl(impl), _scope(case):
        out = module(x)
    out.backward(gz)
    result = {"out": out.detach(), "d_x": x.grad}
    for name, p in module.named_parameters():
        result[f"d_{name}"] = p.grad if p.grad is not None else torch.zeros_like(p)
    return result


def _max_error(got: Any, ref: Any, keep: Any = None) -> float:
    import torch

    got, ref = got.double(), ref.double()
    if keep is not None:
        got, ref = got[keep], ref[keep]
    scale = ref.abs().max().item() if ref.numel() else 0.0
    diff = (got - ref).abs().max().item() if ref.numel() else 0.0
    if not math.isfinite(diff) or not torch.isfinite(got).all():
        return math.inf
    return diff / scale if scale > 0 else diff


def check_kernels(
    device: str,
    dtypes: Sequence[str],
    cases: Sequence[KernelCase],
    impls: Sequence[str] = ("compiled", "autograd", "reference"),
    seed: int = 0,
) -> dict[str, Any]:
    """Compare FRN's paths on ``device``: each case in each of its dtypes.

    For each (case, dtype, impl): the output and every gradient of FRN(x) with x of
    ``case.shape`` in ``dtype`` (channels_last if asked; for "padded" cases inside
    ``padding.image_sizes``), against the reference formula in float64 on the same rounded
    inputs and parameters, and against the reference path in ``dtype``. Errors are
    ``max |a - b| / max |b|``; the input gradient leaves out elements within TIE_MARGIN of
    the TLU threshold. A padded case also needs exact zeros in the padding (output and
    input gradient). Returns {"rows": [...], "compile_fallback": bool, "warnings": [...]}.
    """
    import torch

    from frn_det.layers.frn import frn_reference

    rows: list[dict[str, Any]] = []
    caught: list[str] = []
    for case in cases:
        for dtype_name in dtypes:
            if case.dtypes and dtype_name not in case.dtypes:
                continue
            dtype = getattr(torch, dtype_name)
            gen = torch.Generator().manual_seed(seed)
            x = torch.randn(case.shape, generator=gen) * 2 + 0.5
            gz = torch.randn(case.shape, generator=gen)
            module = _randomised(_build_case(case), seed)
            param_dtype = dtype if case.params == "input" else torch.float32
            x, gz = x.to(dtype), gz.to(dtype)
            module = module.to(param_dtype)
            # float64 copies of the rounded values: the truth every path is compared with
            m64 = copy.deepcopy(module).double().to(device)
            x64, gz64 = x.double().to(device), gz.double().to(device)
            truth = _forward_backward(m64, x64, gz64, "reference", case)
            truth = {k: v.detach().cpu() for k, v in truth.items()}
            mem = torch.channels_last if case.channels_last else torch.contiguous_format
            xd = x.to(device).contiguous(memory_format=mem)
            gzd = gz.to(device).contiguous(memory_format=mem)
            moduled = copy.deepcopy(module).to(device)
            keep = torch.ones(case.shape, dtype=torch.bool)
            valid = None
            if case.tlu:
                with torch.no_grad(), _scope(case):
                    mask = _padding_mask(case)
                    mask = None if mask is None else mask.to(device)
                    y = frn_reference(x64, m64.weight, m64.bias, None, m64.effective_eps(x64),
                                      mask)
                    tau = m64.tau.reshape([1, -1] + [1] * (len(case.shape) - 2))
                    keep = ((y - tau).abs() > TIE_MARGIN * (1 + tau.abs())).cpu()
            if case.form == "padded":
                valid = _padding_mask(case).expand(case.shape)
            results = {}
            for impl in impls:
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    got = _forward_backward(moduled, xd, gzd, impl, case)
                caught += [str(w.message) for w in seen if "FRN:" in str(w.message)]
                results[impl] = {k: v.detach().cpu() for k, v in got.items()}
            for impl in impls:
                got = results[impl]
                errors, vs_path = {}, 0.0
                for key, ref in truth.items():
                    mask_x = keep if key == "d_x" else None
                    errors[key] = _max_error(got[key], ref, mask_x)
                    if "reference" in results:
                        vs_path = max(vs_path, _max_error(got[key], results["reference"][key],
                                                          mask_x))
                problem = ""
                if valid is not None:
                    leaks = (got["out"][~valid].abs().max().item(),
                             got["d_x"][~valid].abs().max().item())
                    if max(leaks) != 0:
                        problem = f"padding not zero (output {leaks[0]:.1e}, d_x {leaks[1]:.1e})"
                tol = TOLERANCES[dtype_name]
                dtypes_ok = got["out"].dtype == dtype and got["d_x"].dtype == dtype
                if not dtypes_ok:
                    problem = f"output {got['out'].dtype}, d_x {got['d_x'].dtype}, want {dtype}"
                ok = max(errors.values()) <= tol and vs_path <= tol and not problem
                rows.append({
                    "case": case.name, "form": case.form, "shape": list(case.shape),
                    "dtype": dtype_name, "params": str(param_dtype).removeprefix("torch."),
                    "impl": impl, "errors": errors, "vs_reference_path": vs_path,
                    "tolerance": tol, "ties_left_out": int((~keep).sum()), "problem": problem,
                    "ok": ok,
                })
    fallback = any(any(p in w for p in FALLBACK_PATTERNS) for w in caught)
    return {"device": device, "rows": rows, "compile_fallback": fallback,
            "warnings": sorted(set(caught)), "tolerances": TOLERANCES, "tie_margin": TIE_MARGIN}


def _padding_mask(case: KernelCase) -> Any:
    """bool (N, 1, H, W): the valid pixels of a padded case (None for the others)."""
    import torch

    if case.form != "padded":
        return None
    mask = torch.zeros(case.shape[0], 1, *case.shape[2:], dtype=torch.bool)
    for i, (h, w) in enumerate(case.sizes):
        mask[i, :, :h, :w] = True
    return mask


# ----------------------------------------------------------------------------------------
# What the GPU machine lacks: its image has torch, Triton, numpy, pytest, OpenCV, matplotlib
# and PyYAML, but none of detectron2's own needs, and nothing can be installed there from a
# registry. These are pure Python and are copied from this environment; pycocotools is
# compiled, so its wheel for the machine's Python is downloaded (BUNDLE_WHEELS).

BUNDLE_PACKAGES = ("detectron2", "fvcore", "iopath", "yacs", "termcolor", "omegaconf", "hydra",
                   "antlr4")
BUNDLE_WHEELS = ("pycocotools==2.0.11",)
WHEEL_DOWNLOAD = (
    "{python} -m pip download --no-deps --only-binary=:all: --python-version 3.12 "
    "--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 "
    "--platform manylinux2014_x86_64 -d {dest} {wheels}"
)


def bundle(dest: Path) -> list[str]:
    """Copy BUNDLE_PACKAGES (without __pycache__) from this interpreter's environment into
    ``dest``; returns their names. Raises RuntimeError for a missing package or one that
    holds compiled extensions (it would not load on another Python)."""
    import importlib.util
    import shutil

    copied = []
    for name in BUNDLE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"--bundle: package {name!r} is not importable here")
        source = Path(next(iter(spec.submodule_search_locations)))
        compiled = [p.name for p in source.rglob("*") if p.suffix in (".so", ".pyd")]
        if compiled:
            raise RuntimeError(f"--bundle: {name} at {source} holds compiled files {compiled}")
        shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        copied.append(name)
    return copied


# ----------------------------------------------------------------------------------------
# Command line


def _worker(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m frn_det_tools.cuda_check")
    sub = parser.add_subparsers(dest="worker", required=True)
    env = sub.add_parser("environment", help="versions and the device")
    env.add_argument("--json", type=Path, required=True)
    tests = sub.add_parser("pytest", help="the tests that skip without CUDA")
    tests.add_argument("--json", type=Path, required=True)
    tests.add_argument("--must-run", action="store_true", help="a skip is a failure")
    tests.add_argument("paths", nargs="+")
    kernels = sub.add_parser("kernels", help="FRN paths against each other")
    kernels.add_argument("--json", type=Path, required=True)
    kernels.add_argument("--preset", choices=list(PRESETS), default="gpu")
    args = parser.parse_args(argv)
    if args.worker == "environment":
        report = environment_report()
        args.json.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        return 0
    if args.worker == "pytest":
        report = run_cuda_tests(args.paths, args.must_run)
        args.json.write_text(json.dumps(report, indent=2))
        return 0  # judged from the JSON: a failed test is a failed check, not a crash
    preset = PRESETS[args.preset]
    report = check_kernels(preset.device, preset.kernel_dtypes, preset.kernel_cases)
    args.json.write_text(json.dumps(report, indent=2))
    for row in report["rows"]:
        print(f"{'ok ' if row['ok'] else 'BAD'} {row['case']:45s} {row['dtype']:9s} "
              f"{row['impl']:9s} max error {max(row['errors'].values()):.2e} "
              f"(tolerance {row['tolerance']:.1e}) {row['problem']}")
    return 0


WORKERS = ("environment", "pytest", "kernels")


def main(argv: Sequence[str] | None = None, repo: Path | None = None) -> int:
    """Command line (module docstring); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in WORKERS:
        return _worker(argv)
    repo = (repo or Path.cwd()).resolve()
    parser = argparse.ArgumentParser(
        prog="tools/cuda_check.py",
        description="frn-det's prepared CUDA check (issue 14): tests, FRN kernels, AMP and "
        "SyncBN training, benchmarks; each step time-limited.",
    )
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the same pipeline on the CPU at tiny sizes (for testing it)")
    parser.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON and SUMMARY.md (default docs/cuda)")
    parser.add_argument("--work", type=Path, default=None,
                        help="logs, dataset, training folders (default output/cuda_check)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop starting steps after this many seconds (default: the "
                        "preset's, 450 on the GPU)")
    names = [s.name for s in build_steps(GPU, repo, Path("out"), Path("work"))]
    parser.add_argument("--only", nargs="+", default=[], choices=names, metavar="STEP",
                        help=f"run only these steps: {', '.join(names)}")
    parser.add_argument("--skip", nargs="+", default=[], choices=names, metavar="STEP")
    parser.add_argument("--bundle", type=Path, default=None, metavar="DIR",
                        help="copy the pure-Python packages the GPU machine lacks into DIR "
                        "and print the command that downloads the compiled ones; run nothing")
    args = parser.parse_args(argv)
    if args.bundle is not None:
        args.bundle.mkdir(parents=True, exist_ok=True)
        print(f"Copied {', '.join(bundle(args.bundle))} into {args.bundle}. Now download:")
        print("  " + WHEEL_DOWNLOAD.format(python=sys.executable, dest=args.bundle / "whl",
                                           wheels=" ".join(BUNDLE_WHEELS)))
        return 0
    preset = CPU_SMOKE if args.cpu_smoke else GPU
    if args.budget_s is not None:
        preset = dataclasses.replace(preset, budget_s=args.budget_s)
    out = (args.out or repo / "docs" / "cuda").resolve()
    work = (args.work or repo / "output" / "cuda_check").resolve()
    if args.dry_run:
        steps = [s for s in build_steps(preset, repo, out, work)
                 if (not args.only or s.name in args.only) and s.name not in args.skip]
        print(f"CUDA check, preset {preset.name} ({preset.device}), budget "
              f"{preset.budget_s:.0f} s; JSON and SUMMARY.md to {out}, logs to {work / 'logs'}")
        for i, s in enumerate(steps, 1):
            print(f"\n[{i}/{len(steps)}] {s.name}: {s.title} (limit {s.timeout_s:.0f} s)")
            print(f"    {_shell(s.argv)}")
            for path in s.outputs:
                print(f"    -> {path}")
        return 0
    return run_check(preset, repo, out, work, args.only, args.skip)


if __name__ == "__main__":
    sys.exit(main())
