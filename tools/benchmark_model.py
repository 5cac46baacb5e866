#!/usr/bin/env python
"""Training speed and memory of Mask R-CNN R-50-FPN with BN, GN, SyncBN and FRN, side by side.

Builds one model per norm from configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_{norm}
.yaml (no weights, same seed, the same network otherwise: see ``frn_det_tools.benchmark``), trains
them in turns on one fixed synthetic batch, and reports the median seconds per full training
iteration after warm-up, the first iteration (which compiles FRN's kernels) apart, the bytes
saved for backward and the peak memory of an iteration. Prints a Markdown table; ``--json``
writes the rows.

SyncBN in one process is BN: detectron2's NaiveSyncBatchNorm (CPU) and torch's SyncBatchNorm
(CUDA) skip the all-reduce at world size 1, so its row measures no communication.

    python tools/benchmark_model.py --size 384 --batch 2 --iters 5
    python tools/benchmark_model.py --device cuda --size 800 --width 1333 --iters 20 --json b.json
    python tools/benchmark_model.py --norms GN FRN --impl compiled autograd --profile
    python tools/benchmark_model.py --norms FRN --padding-aware FRN --ragged --size 384
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from frn_det.engine.validation import check_config_options
from frn_det.layers.frn import FRN_IMPLS
from frn_det_tools.benchmark import (
    DEFAULT_CONFIG,
    NORMS,
    SAME_NETWORK_OPTS,
    BenchSpec,
    check_common_args,
    config_path,
    markdown,
    profile_table,
    run_benchmark,
    target_summary,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=list(NORMS))
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per norm")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations after the first")
    parser.add_argument("--size", type=int, default=512, help="image height (and width) in pixels")
    parser.add_argument(
        "--width", type=int, default=None, help="image width in pixels (default: --size)"
    )
    parser.add_argument("--batch", type=int, default=2, help="images per iteration")
    parser.add_argument("--boxes", type=int, default=3, help="ground-truth objects per image")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--impl",
        nargs="+",
        default=["auto"],
        choices=list(FRN_IMPLS),
        help="FRN implementation(s); several give one FRN row each",
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help="config file per norm, relative to configs/, {norm} = bn/gn/syncbn/frn",
    )
    parser.add_argument(
        "--as-written",
        action="store_true",
        help="keep each config's FREEZE_AT and STRIDE_IN_1X1 instead of the same network "
        "for every norm (all stages trained, stride in the 1x1 conv)",
    )
    parser.add_argument(
        "--padding-aware",
        nargs="+",
        default=[],
        choices=list(NORMS),
        help="norms that get a second row with MODEL.PADDING_AWARE_NORM True",
    )
    parser.add_argument(
        "--ragged",
        action="store_true",
        help="images of different widths (side to 3/4 side) so the batch is padded",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-rss", action="store_true", help="CPU: skip the peak-RSS processes")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the timings profile one more iteration per norm and print CPU time by "
        "module type and autograd node",
    )
    parser.add_argument("--json", type=Path, default=None, help="write rows and metadata here")
    parser.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="KEY VALUE config pairs merged into every norm's config; last on the line",
    )
    args = parser.parse_args(argv)
    check_common_args(
        parser,
        args,
        counts=("iters", "size", "batch", "boxes", "width"),
        non_negative=("warmup",),
    )
    for norm in args.norms:
        if not config_path(args.config, norm).is_file():
            parser.error(
                f"--config {args.config}: {config_path(args.config, norm)} (norm {norm}) "
                "does not exist"
            )
    check_config_options(args.opts, error=parser.error)
    return args


def spec_from_args(args: argparse.Namespace) -> BenchSpec:
    """The ``BenchSpec`` the command line asks for."""
    opts = () if args.as_written else SAME_NETWORK_OPTS
    return BenchSpec(
        norms=tuple(args.norms),
        config=args.config,
        opts=opts + tuple(args.opts),
        size=args.size,
        batch=args.batch,
        boxes=args.boxes,
        device=args.device,
        impls=tuple(args.impl),
        iters=args.iters,
        warmup=args.warmup,
        seed=args.seed,
        threads=args.threads,
        padding_aware=tuple(args.padding_aware),
        ragged=args.ragged,
        width=args.width,
    )


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table (and profile), write --json; returns the rows."""
    args = parse_args(argv)
    spec = spec_from_args(args)
    rows, meta = run_benchmark(
        spec,
        rss=not args.no_rss,
        profile=args.profile,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    device = torch.device(spec.device)
    where = meta["device_name"] if device.type == "cuda" else f"cpu ({meta['threads']} threads)"
    shape = f"{spec.size}x{spec.width or spec.size}" + (
        " to 3/4 as wide (ragged)" if spec.ragged else ""
    )
    print(
        f"Mask R-CNN training benchmark: {where}, {spec.batch} images of {shape}"
        f" with {spec.boxes} objects each, median of {spec.iters} iterations after "
        f"{spec.warmup} warm-up, torch {torch.__version__}, FRN impl {', '.join(spec.impls)}\n"
    )
    print(markdown(rows))
    print()
    print(
        "saved-for-backward: unique non-parameter storages kept by autograd in one forward. "
        f"peak: {meta['peak_memory'] or 'not measured (--no-rss)'}."
    )
    if "SyncBN" in spec.norms:
        print("SyncBN: single process, world size 1, so no all-reduce: it computes BN.")
    differences = {k: v for k, v in meta["config_differences"].items() if "NORM" not in k}
    if differences:
        print("Config keys that differ between rows (besides the NORM keys):")
        for key, values in differences.items():
            print(f"  {key}: " + ", ".join(f"{n}={v}" for n, v in values.items()))
    summary = target_summary(rows)
    if summary:
        print(
            "\nTargets (FRN no slower than GN, within 1.05x of BN, peak memory <= GN; "
            "padding-aware within 1.10x of plain):"
        )
        print(summary)
    if args.profile:
        print("\nOne profiled iteration per norm (after the timed ones):\n")
        print(profile_table(meta["profile_ms"]))
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
