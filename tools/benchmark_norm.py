#!/usr/bin/env python
"""Training-step time and backward memory of FRN against BN+ReLU and GN+ReLU.

Times forward+backward (median of ``--repeats`` runs after warm-up, so one-off costs such
as torch.compile are excluded and reported separately) at detection shapes, and measures
the bytes each layer keeps for backward (unique storages seen by saved_tensors_hooks; on
CUDA also the peak allocated memory). Prints a Markdown table; ``--json`` writes the rows.

    python tools/benchmark_norm.py                       # CPU, fp32, all shapes
    python tools/benchmark_norm.py --shapes p2 mask --repeats 5 --json bench.json

At the conv shapes of a padded batch (stem, p2) padding-aware FRN and GN rows run on the
same input as a batch of two images, the second 3/4 as wide as the canvas. EvoNorm-S0 and
-B0 (in their act=True form, where a norm+ReLU stands) have rows at every conv shape and
padding-aware rows at stem and p2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from frn_det.layers import padding
from frn_det.layers.evonorm import (
    EvoNormB0,
    EvoNormS0,
    PaddingAwareEvoNormB0,
    PaddingAwareEvoNormS0,
)
from frn_det.layers.frn import (
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    PaddingAwareFilterResponseNorm2d,
    frn_impl,
)
from frn_det_tools.benchmark import check_common_args
from frn_det_tools.markdown import markdown_table

SHAPES: dict[str, tuple[int, ...]] = {
    "stem": (2, 64, 400, 608),
    "p2": (2, 256, 200, 304),
    "mask": (512, 256, 14, 14),
    "fc": (1024, 1024),
}
BASELINE = "BN+ReLU"
FRN_PATHS = ("compiled", "autograd", "reference")
PADDED_SHAPES = ("stem", "p2")  # maps of a padded image batch; mask and fc are per-RoI
PADDING_AWARE = " padding-aware"


class NaiveFRN(nn.Module):
    """FRN+TLU as most public ports write it: elementwise ops in the input dtype."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.tau = nn.Parameter(torch.zeros(channels))
        self.eps = nn.Parameter(torch.full((1,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) or (N, C); same shape out."""
        shape = [1, -1] + [1] * (x.dim() - 2)
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True) if x.dim() == 4 else x.pow(2)
        x = x * torch.rsqrt(nu2 + self.eps.abs())
        return torch.max(self.weight.view(shape) * x + self.bias.view(shape), self.tau.view(shape))


class _WithImpl(nn.Module):
    """An FRN module that always runs with one implementation."""

    def __init__(self, frn: nn.Module, impl: str) -> None:
        super().__init__()
        self.frn, self.impl = frn, impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with frn_impl(self.impl):
            return self.frn(x)


class _InPaddedBatch(nn.Module):
    """A padding-aware layer run on a batch whose last image is 3/4 as wide as the canvas."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        sizes = [(h, w)] * (n - 1) + [(h, (3 * w) // 4)]
        with padding.image_sizes(sizes, (h, w)):
            return self.layer(x)


def build_methods(name: str, shape: tuple[int, ...]) -> dict[str, nn.Module | Callable]:
    """The layers compared at ``shape``: name -> module taking (N, C, ...) input."""
    channels, fc = shape[1], len(shape) == 2
    bn = nn.BatchNorm1d(channels) if fc else nn.BatchNorm2d(channels)
    gn = nn.GroupNorm(32, channels)
    frn_cls = FilterResponseNorm1d if fc else FilterResponseNorm2d
    methods: dict[str, nn.Module | Callable] = {
        BASELINE: nn.Sequential(bn, nn.ReLU()),
        "GN+ReLU": nn.Sequential(gn, nn.ReLU()),
    }
    for impl in FRN_PATHS:
        methods[f"FRN {impl}"] = _WithImpl(frn_cls(channels), impl)
    methods["FRN naive"] = NaiveFRN(channels)
    if not fc:
        # EvoNorm where a norm+ReLU stands (act=True); it has no (N, C) form
        methods["EvoNormS0"] = EvoNormS0(channels)
        methods["EvoNormB0"] = EvoNormB0(channels)
    if name in PADDED_SHAPES:
        for impl in ("compiled", "autograd"):
            layer = _WithImpl(PaddingAwareFilterResponseNorm2d(channels), impl)
            methods[f"FRN {impl}{PADDING_AWARE}"] = _InPaddedBatch(layer)
        gn_aware = nn.Sequential(padding.PaddingAwareGroupNorm(32, channels), nn.ReLU())
        methods[f"GN+ReLU{PADDING_AWARE}"] = _InPaddedBatch(gn_aware)
        methods[f"EvoNormS0{PADDING_AWARE}"] = _InPaddedBatch(PaddingAwareEvoNormS0(channels))
        methods[f"EvoNormB0{PADDING_AWARE}"] = _InPaddedBatch(PaddingAwareEvoNormB0(channels))
    return methods


def saved_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn`` and return its output and the bytes of unique storages saved for backward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    module: nn.Module, x: torch.Tensor, grad: torch.Tensor, repeats: int, warmup: int
) -> dict[str, float]:
    """Forward+backward timings (ms), first-call time (ms) and memory (bytes) of one layer."""
    device = x.device

    def step() -> None:
        module(x).backward(grad)

    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    x.grad = None
    module.zero_grad(set_to_none=True)
    out, saved = saved_bytes(lambda: module(x))
    del out
    row = {"ms": statistics.median(times), "first_ms": first_ms, "saved_bytes": saved}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        row["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
    return row


def run(args: argparse.Namespace) -> list[dict]:
    """Benchmark every method at every requested shape; one dict per (shape, method)."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    rows = []
    for name in args.shapes:
        shape = SHAPES[name]
        x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn_like(x)
        input_bytes = x.numel() * x.element_size()
        for method, module in build_methods(name, shape).items():
            module = module.to(device=device, dtype=dtype)
            row = measure(module, x, grad, args.repeats, args.warmup)
            row.update(shape=name, dims="x".join(map(str, shape)), method=method)
            row["saved_vs_input"] = row["saved_bytes"] / input_bytes
            rows.append(row)
            print(f"  {name:5s} {method:27s} {row['ms']:9.1f} ms", file=sys.stderr, flush=True)
        base = next(r["ms"] for r in rows if r["shape"] == name and r["method"] == BASELINE)
        for r in rows:
            if r["shape"] == name:
                r["vs_bn"] = r["ms"] / base
    return rows


def markdown(rows: list[dict], cuda: bool) -> str:
    """The rows as a Markdown table."""
    headers = ["shape", "method", "fwd+bwd ms", "x BN+ReLU", "saved MiB", "saved / input"]
    headers += ["peak MiB"] if cuda else []
    table = []
    for r in rows:
        cells = [f"{r['shape']} {r['dims']}", r["method"], f"{r['ms']:.1f}", f"{r['vs_bn']:.2f}"]
        cells += [f"{r['saved_bytes'] / 2**20:.1f}", f"{r['saved_vs_input']:.2f}"]
        cells += [f"{r['peak_bytes'] / 2**20:.1f}"] if cuda else []
        table.append(cells)
    return markdown_table(table, headers, "ll" + "r" * (len(headers) - 2))


def target_summary(rows: list[dict]) -> str:
    """How the default (compiled) FRN path compares with GN+ReLU and the naive FRN."""
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        by = {r["method"]: r for r in rows if r["shape"] == shape}
        frn = by["FRN compiled"]
        lines.append(
            f"- {shape}: FRN compiled / GN+ReLU = {frn['ms'] / by['GN+ReLU']['ms']:.2f}, "
            f"/ naive FRN = {frn['ms'] / by['FRN naive']['ms']:.2f}; saved for backward "
            f"{frn['saved_vs_input']:.2f}x (compiled), "
            f"{by['FRN autograd']['saved_vs_input']:.2f}x (autograd) one input copy; "
            f"first call (compile) {frn['first_ms'] / 1e3:.1f} s"
        )
        for impl in ("compiled", "autograd"):
            aware = by.get(f"FRN {impl}{PADDING_AWARE}")
            if aware is not None:
                ratio = aware["ms"] / by[f"FRN {impl}"]["ms"]
                met = "met" if ratio <= 1.15 else "MISSED"
                lines.append(
                    f"  - {shape}: FRN {impl} padding-aware / FRN {impl} = {ratio:.2f} "
                    f"(<= 1.15: {met})"
                )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Memory-bandwidth floor: the least time an FRN+TLU forward+backward can take at a shape,
# given the bandwidth a plain copy reaches on the same device.

BYTE_MODEL = (
    "bytes = 5 x the input's bytes (forward reads x and writes z; backward reads x and gz "
    "and writes dx) + 8 x N x C (the fp32 statistic, written in forward and read in "
    "backward) + 9 x C x element size (gamma, beta, tau read in forward and in backward, "
    "their gradients written); floor = bytes / copy bandwidth, the same for every row of a "
    "shape"
)


def bytes_moved(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes an FRN+TLU forward+backward has to move at ``shape`` in ``dtype`` (BYTE_MODEL)."""
    element = torch.empty((), dtype=dtype).element_size()
    n, c = shape[0], shape[1]
    return 5 * torch.Size(shape).numel() * element + 8 * n * c + 9 * c * element


def copy_bandwidth(device: torch.device, mib: int, repeats: int) -> float:
    """Bytes per second of a copy of a ``mib`` MiB tensor on ``device``, reads and writes
    counted (2 x size / time): the median of ``repeats`` copies after one untimed one."""
    src = torch.ones(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() / statistics.median(times)


def add_floor(rows: list[dict], bandwidth: float, dtype: torch.dtype) -> list[dict]:
    """Set each row's bytes_moved, floor_ms (bytes / ``bandwidth``) and vs_floor (its ms over
    floor_ms), in place."""
    for r in rows:
        shape = tuple(int(d) for d in r["dims"].split("x"))
        r["bytes_moved"] = bytes_moved(shape, dtype)
        r["floor_ms"] = r["bytes_moved"] / bandwidth * 1e3
        r["vs_floor"] = r["ms"] / r["floor_ms"]
    return rows


def floor_table(rows: list[dict], bandwidth: float) -> str:
    """Each row's time beside the bandwidth floor of its shape, as Markdown."""
    lines = [
        f"Bandwidth floor: copy bandwidth {bandwidth / 1e9:.1f} GB/s; {BYTE_MODEL}.",
        "",
    ]
    headers = ["shape", "method", "fwd+bwd ms", "MB moved", "floor ms", "x floor"]
    table = [
        [
            f"{r['shape']} {r['dims']}", r["method"], f"{r['ms']:.3f}",
            f"{r['bytes_moved'] / 1e6:.1f}", f"{r['floor_ms']:.3f}", f"{r['vs_floor']:.2f}",
        ]  # fmt: skip
        for r in rows
    ]
    lines.append(markdown_table(table, headers, "llrrrr"))
    return "\n".join(lines)


def parse_dims(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=AxBx...`` (--dims): shape NAME of SHAPES at other sizes, e.g. tiny ones in tests."""
    name, _, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split("x"))
    except ValueError:
        shape = ()
    if name not in SHAPES or len(shape) != len(SHAPES.get(name, ())) or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"--dims wants NAME=AxB... with NAME one of {', '.join(SHAPES)} and as many "
            f"positive sizes as that shape has, got {text!r}"
        )
    return name, shape


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run the benchmark, print and optionally save the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per layer")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs after the first")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument(
        "--dims",
        action="append",
        default=[],
        type=parse_dims,
        metavar="NAME=AxB...",
        help="run shape NAME at these sizes instead (repeatable), e.g. fc=4x32",
    )
    parser.add_argument(
        "--bandwidth-mib",
        type=int,
        default=None,
        help="size of the copy that measures the bandwidth floor (default 1024 MiB on "
        "CUDA, 256 on the CPU)",
    )
    args = parser.parse_args(argv)
    SHAPES.update(dict(args.dims))
    check_common_args(parser, args, counts=("repeats",), non_negative=("warmup",))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    device = torch.device(args.device)
    copy_mib = args.bandwidth_mib or (1024 if device.type == "cuda" else 256)
    bandwidth = copy_bandwidth(device, copy_mib, args.repeats)
    add_floor(rows, bandwidth, getattr(torch, args.dtype))
    print(
        f"FRN benchmark: {device.type} ({torch.get_num_threads()} threads), {args.dtype}, "
        f"median of {args.repeats}, torch {torch.__version__}\n"
    )
    print(markdown(rows, device.type == "cuda"))
    print()
    print(target_summary(rows))
    print()
    print(floor_table(rows, bandwidth))
    if args.json:
        meta = {
            "device": args.device,
            "dtype": args.dtype,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "torch": torch.__version__,
            "copy_mib": copy_mib,
            "copy_bandwidth_bytes_per_s": bandwidth,
            "byte_model": BYTE_MODEL,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
