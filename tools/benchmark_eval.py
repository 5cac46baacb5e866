#!/usr/bin/env python
"""COCO evaluation time of faster-coco-eval against pycocotools' COCOeval, on the same data.

Builds a synthetic COCO-sized ground truth and detector output (frn_det_tools.synthetic:
by default 5,000 images, ~7 objects each in 80 categories, 100 detections per image), writes
both as json files, then runs each backend in turn in this process: loading (``COCO(gt)``
and ``loadRes(results)``, json parsing included) and evaluation (evaluate + accumulate +
summarize) are timed separately. Prints the times, the speed-up and the largest absolute
difference between the two backends' 12 COCO stats and per-category APs (0..1 scale);
``--json PATH`` (``-`` for stdout) writes the same as json.

    python tools/benchmark_eval.py                       # bbox, 5,000 images
    python tools/benchmark_eval.py --iou-type segm       # masks, 500 images by default
    python tools/benchmark_eval.py --images 1000 --dets-per-image 50 --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from frn_det_tools.benchmark import check_common_args
from frn_det_tools.markdown import markdown_table
from frn_det_tools.synthetic import IOU_TYPES, make_synthetic_coco

DEFAULT_IMAGES = {"bbox": 5000, "segm": 500}
TARGET_SPEEDUP = 3.0
TOLERANCE = 1e-4
STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


def _clock(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _cpu_clock(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """``fn``'s result, wall seconds and CPU seconds of this process (all its threads)."""
    cpu = time.process_time()
    out, wall = _clock(fn, *args, **kwargs)
    return out, wall, time.process_time() - cpu


def run_backend(name: str, gt_file: Path, results_file: Path, iou_type: str) -> dict[str, Any]:
    """Load and evaluate with one backend ("pycocotools" or "faster"); times in seconds,
    ``stats`` the 12 COCO numbers, ``per_category_ap`` detectron2's per-class AP."""
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        def make_eval(gt: Any, dt: Any) -> Any:
            return COCOeval(gt, dt, iou_type)
    else:
        from faster_coco_eval import COCO, COCOeval_faster

        def make_eval(gt: Any, dt: Any) -> Any:
            return COCOeval_faster(gt, dt, iou_type, print_function=lambda *a, **k: None)

    times: dict[str, float] = {}
    cpu_times: dict[str, float] = {}
    # pycocotools prints progress and the summary table; only the numbers matter here.
    with contextlib.redirect_stdout(io.StringIO()):
        gt, times["load_gt"], cpu_times["load_gt"] = _cpu_clock(COCO, str(gt_file))
        dt, times["load_results"], cpu_times["load_results"] = _cpu_clock(
            gt.loadRes, str(results_file)
        )
        coco_eval = make_eval(gt, dt)
        for step in ("evaluate", "accumulate", "summarize"):
            _, times[step], cpu_times[step] = _cpu_clock(getattr(coco_eval, step))
    for t in (times, cpu_times):
        t["load"] = t["load_gt"] + t["load_results"]
        t["eval"] = t["evaluate"] + t["accumulate"] + t["summarize"]
    precision = coco_eval.eval["precision"]
    per_category = []
    for k in range(precision.shape[2]):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_category.append(float(p.mean()) if p.size else float("nan"))
    return {
        "backend": name,
        "times_s": times,
        "cpu_times_s": cpu_times,
        "stats": [float(s) for s in coco_eval.stats[: len(STAT_NAMES)]],
        "per_category_ap": per_category,
    }


def _max_abs_diff(a: list[float], b: list[float]) -> float:
    a_, b_ = np.asarray(a), np.asarray(b)
    if not np.array_equal(np.isnan(a_), np.isnan(b_)):
        return float("inf")
    both = ~np.isnan(a_)
    return float(np.max(np.abs(a_[both] - b_[both]), initial=0.0))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the data, run both backends and compare them."""
    images = DEFAULT_IMAGES[args.iou_type] if args.images is None else args.images
    data, gen_s = _clock(
        make_synthetic_coco,
        images,
        dets_per_image=args.dets_per_image,
        iou_type=args.iou_type,
        seed=args.seed,
    )
    if args.iou_type == "segm":
        # As detectron2 does before mask evaluation: without a box, loadRes takes the area
        # from the mask, so small / medium / large follow mask area.
        for r in data.results:
            r.pop("bbox")
    meta = {
        "iou_type": args.iou_type,
        "images": images,
        "gt_objects": data.num_objects,
        "detections": len(data.results),
        "seed": args.seed,
        "generate_s": gen_s,
        "python": platform.python_version(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "versions": _versions(),
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="frn_bench_eval_") as tmp:
        gt_file, results_file = Path(tmp, "gt.json"), Path(tmp, "results.json")
        gt_file.write_text(json.dumps(data.ground_truth))
        results_file.write_text(json.dumps(data.results))
        del data
        for backend in ("pycocotools", "faster"):
            gc.collect()
            rows.append(run_backend(backend, gt_file, results_file, args.iou_type))
    ref, fast = rows
    comparison = {
        "eval_speedup": ref["times_s"]["eval"] / fast["times_s"]["eval"],
        "eval_cpu_speedup": ref["cpu_times_s"]["eval"] / fast["cpu_times_s"]["eval"],
        "load_speedup": ref["times_s"]["load"] / fast["times_s"]["load"],
        "total_speedup": (ref["times_s"]["eval"] + ref["times_s"]["load"])
        / (fast["times_s"]["eval"] + fast["times_s"]["load"]),
        "max_abs_diff_stats": _max_abs_diff(ref["stats"], fast["stats"]),
        "max_abs_diff_per_category_ap": _max_abs_diff(
            ref["per_category_ap"], fast["per_category_ap"]
        ),
    }
    return {"meta": meta, "rows": rows, "comparison": comparison}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("pycocotools", "faster-coco-eval", "numpy")}


def report(result: dict[str, Any]) -> str:
    """The human-readable summary: a Markdown table of times, then the comparison."""
    meta, rows, cmp_ = result["meta"], result["rows"], result["comparison"]
    lines = [
        f"{meta['iou_type']}: {meta['images']} images, {meta['gt_objects']} objects, "
        f"{meta['detections']} detections (seed {meta['seed']}, generated in "
        f"{meta['generate_s']:.1f} s); {meta['cpus_available']} CPUs; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
    ]
    headers = ["backend", "load gt (s)", "load results (s)", "evaluate (s)", "accumulate (s)"]
    headers += ["summarize (s)", "eval total (s)", "eval CPU (s)"]
    table = []
    for row in rows:
        t = row["times_s"]
        table.append([
            row["backend"], f"{t['load_gt']:.2f}", f"{t['load_results']:.2f}",
            f"{t['evaluate']:.2f}", f"{t['accumulate']:.2f}", f"{t['summarize']:.3f}",
            f"{t['eval']:.2f}", f"{row['cpu_times_s']['eval']:.2f}",
        ])  # fmt: skip
    lines.append(markdown_table(table, headers, "l" + "r" * (len(headers) - 1)))
    stats = " ".join(f"{n}={v:.4f}" for n, v in zip(STAT_NAMES, rows[0]["stats"], strict=True))
    ok = max(cmp_["max_abs_diff_stats"], cmp_["max_abs_diff_per_category_ap"]) <= TOLERANCE
    lines += [
        "",
        f"pycocotools stats: {stats}",
        f"speed-up (pycocotools / faster, wall clock): eval {cmp_['eval_speedup']:.1f}x "
        f"(CPU time {cmp_['eval_cpu_speedup']:.1f}x), load {cmp_['load_speedup']:.2f}x, "
        f"load+eval {cmp_['total_speedup']:.1f}x (target: eval >= {TARGET_SPEEDUP:.0f}x)",
        f"max |difference|: stats {cmp_['max_abs_diff_stats']:.2e}, per-category AP "
        f"{cmp_['max_abs_diff_per_category_ap']:.2e} "
        f"({'within' if ok else 'OUTSIDE'} tolerance {TOLERANCE:g})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="number of images (default: 5000 for bbox, 500 for segm)",
    )
    parser.add_argument("--dets-per-image", type=int, default=100)
    parser.add_argument("--iou-type", choices=IOU_TYPES, default="bbox")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here ('-': stdout)")
    args = parser.parse_args(argv)
    check_common_args(parser, args, counts=("images", "dets_per_image"))
    result = run(args)
    if args.json == "-":
        print(json.dumps(result, indent=2))
        return
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
