"""Whole-model training benchmark: one Mask R-CNN per norm, trained side by side on one batch.

What ``tools/benchmark_model.py`` runs. Every model is built from its repo config with the
same seed and trains on the same fixed synthetic batch (images with a few boxes and masks).
Iterations are interleaved round-robin over the norms, so the machine's noise falls on all
of them alike; a norm's time is the median seconds per full training iteration (forward,
losses, backward, optimizer step) after warm-up. The first iteration, which holds one-off
costs such as compiling FRN's kernels, is timed and reported apart.

Memory, two ways:

- saved for backward: the bytes of unique storages autograd keeps from one forward pass
  (``saved_tensors_hooks``, as ``tools/benchmark_norm.py``), parameters and buffers left
  out. Deterministic for a given set of sampled RoIs.
- peak: on CUDA ``torch.cuda.max_memory_allocated`` during one iteration above what was
  allocated before it. On the CPU the rise of the peak resident set (VmHWM, reset through
  /proc/self/clear_refs) during one iteration above the resident set before it, measured
  in a fresh process per norm (``python -m frn_det_tools.benchmark``) with glibc's mmap threshold
  fixed, so freed tensors go back to the system and one norm's cached heap cannot hide
  another's allocations.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from frn_det.config import add_frn_config
from frn_det.engine import Trainer, prepare_config
from frn_det.layers.frn import frn_impl
from frn_det.model_zoo import configs_root
from frn_det.solver import build_optimizer
from frn_det_tools.markdown import markdown_table

__all__ = [
    "DEFAULT_CONFIG",
    "NORMS",
    "BenchSpec",
    "build_batch",
    "build_config",
    "markdown",
    "profile_iteration",
    "add_ratios",
    "run_benchmark",
    "target_summary",
]

NORMS = ("BN", "GN", "SyncBN", "FRN")
DEFAULT_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_{norm}.yaml"
# The same network for every norm, so that only the norm differs: every stage trains
# (detectron2's FREEZE_AT 2 would turn BN/GN/SyncBN's stem and res2 into frozen, gradient-
# free layers while the FRN config trains them), and every block strides in its 1x1 conv
# (the GN config's FAIR weights stride in the 3x3 conv, which costs more FLOPs).
SAME_NETWORK_OPTS = ("MODEL.BACKBONE.FREEZE_AT", 0, "MODEL.RESNETS.STRIDE_IN_1X1", True)
MIB = 2**20
PADDING_AWARE = " padding-aware"
"""Suffix of a row that runs its norm with MODEL.PADDING_AWARE_NORM True."""


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """What one benchmark run compares; the same for every norm.

    config: config file relative to ``configs/`` (or absolute), ``{norm}`` standing for the
        lower-cased norm name.
    opts: ``KEY VALUE`` pairs merged into every norm's config after the file.
    padding_aware: norms that get a second row with MODEL.PADDING_AWARE_NORM True.
    ragged: images of different sizes (``size`` x ``width``, then narrower), so that the
        batch is padded as detection batches are; otherwise every image is the same.
    width: image width in pixels (``size`` is the height); None for square images.
    """

    norms: tuple[str, ...] = NORMS
    config: str = DEFAULT_CONFIG
    opts: tuple[Any, ...] = SAME_NETWORK_OPTS
    size: int = 512
    batch: int = 2
    boxes: int = 3
    device: str = "cpu"
    impls: tuple[str, ...] = ("auto",)
    iters: int = 5
    warmup: int = 1
    seed: int = 0
    threads: int | None = None
    padding_aware: tuple[str, ...] = ()
    ragged: bool = False
    width: int | None = None

    def runs(self) -> list[tuple[str, str]]:
        """(row name, norm) pairs: one per norm, one per FRN implementation for FRN, and
        each again with PADDING_AWARE's suffix for the norms in ``padding_aware``."""
        runs = []
        for norm in self.norms:
            if norm == "FRN" and len(self.impls) > 1:
                names = [f"FRN {impl}" for impl in self.impls]
            else:
                names = [norm]
            runs += [(name, norm) for name in names]
            if norm in self.padding_aware:
                runs += [(name + PADDING_AWARE, norm) for name in names]
        return runs

    def impl_of(self, name: str) -> str:
        """The FRN implementation a row trains with."""
        base = name.removesuffix(PADDING_AWARE)
        return base.split(" ", 1)[1] if base.startswith("FRN ") else self.impls[0]


def check_common_args(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    counts: Sequence[str] = (),
    non_negative: Sequence[str] = (),
) -> None:
    """``parser.error`` (exit 2, naming the flag) for the benchmark tools' shared mistakes.

    ``counts`` must be >= 1 where given, ``non_negative`` >= 0; ``--threads`` >= 1;
    ``--device`` cpu or an available cuda[:N]; ``--json`` in an existing folder (checked
    before the benchmark runs, not after).
    """
    for name in counts:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in non_negative:
        value = getattr(args, name, None)
        if value is not None and value < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        parser.error(f"--threads must be >= 1, got {threads}")
    device = getattr(args, "device", "cpu")
    if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        parser.error(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda given but torch.cuda.is_available() is False")
    out = getattr(args, "json", None)
    if out is not None and str(out) != "-" and not Path(out).resolve().parent.is_dir():
        parser.error(f"--json {out}: folder {Path(out).resolve().parent} does not exist")


def config_path(template: str, norm: str) -> Path:
    """The config file of ``norm``: ``template`` with {norm}, relative to frn-det's
    packaged configs (the repository's configs/) unless absolute; it may not exist."""
    path = Path(template.format(norm=norm.lower()))
    return path if path.is_absolute() else configs_root() / path


def build_config(
    spec: BenchSpec, norm: str, impl: str, padding_aware: bool = False
) -> CfgNode:
    """The frozen config of ``norm``: its file, ``spec.opts``, no weights, ``spec.device``.

    The learning rate is that of the first iteration of the config's own schedule
    (BASE_LR x WARMUP_FACTOR), so repeated steps on one batch stay finite.
    """
    cfg = add_frn_config(get_cfg())
    cfg.merge_from_file(str(config_path(spec.config, norm)))
    cfg.merge_from_list([str(v) if not isinstance(v, str) else v for v in spec.opts])
    cfg.MODEL.WEIGHTS = ""  # nothing downloads; every norm starts from the seeded init
    cfg.MODEL.DEVICE = spec.device
    cfg.MODEL.FRN.IMPL = impl
    cfg.MODEL.PADDING_AWARE_NORM = padding_aware
    cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR * cfg.SOLVER.WARMUP_FACTOR
    cfg = prepare_config(cfg, world_size=1)
    cfg.freeze()
    return cfg


def config_differences(configs: dict[str, CfgNode]) -> dict[str, dict[str, Any]]:
    """Config keys whose values differ between the rows' configs: {key: {row: value}}."""

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(node, dict):
            return {prefix: node}
        items: dict[str, Any] = {}
        for key, value in node.items():
            items.update(flat(value, f"{prefix}.{key}" if prefix else key))
        return items

    flats = {name: flat(cfg) for name, cfg in configs.items()}
    keys = sorted(set().union(*flats.values()))
    differences = {}
    for key in keys:
        values = {name: f.get(key) for name, f in flats.items()}
        if len({repr(v) for v in values.values()}) > 1:
            differences[key] = values
    return differences


def build_batch(
    size: int,
    batch: int,
    boxes: int,
    num_classes: int,
    device: str,
    seed: int = 0,
    ragged: bool = False,
    full_width: int | None = None,
) -> list[dict[str, Any]]:
    """A fixed synthetic training batch in detectron2's format.

    Returns ``batch`` dicts with "image" (3, size, W) uint8 (smooth random colours plus
    noise), "height", "width" and "instances" holding ``boxes`` gt_boxes (Boxes, XYXY),
    gt_classes and gt_masks (BitMasks: a filled ellipse inside each box). W is
    ``full_width`` (default ``size``), or with ``ragged`` falls linearly to 3/4 of it over
    the batch. Generated from ``seed`` alone, so every norm and every process sees the same
    pixels.
    """
    gen = torch.Generator().manual_seed(seed)
    full_width = full_width or size
    inputs = []
    for k in range(batch):
        width = round(full_width * (1 - 0.25 * k / max(1, batch - 1))) if ragged else full_width
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(width), indexing="ij")
        coarse = torch.rand(1, 3, 8, 8, generator=gen)
        image = nn.functional.interpolate(coarse, size=(size, width), mode="bilinear")[0]
        image = (image * 200 + torch.rand(3, size, width, generator=gen) * 55).to(torch.uint8)
        extent = torch.tensor([width, size], dtype=torch.float32)
        wh = torch.rand(boxes, 2, generator=gen) * 0.4 * extent + 0.1 * extent
        xy = torch.rand(boxes, 2, generator=gen) * (extent - wh)
        xyxy = torch.cat([xy, xy + wh], dim=1)
        masks = torch.zeros(boxes, size, width, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(xyxy.tolist()):
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            masks[i] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        instances = Instances((size, width))
        instances.gt_boxes = Boxes(xyxy)
        instances.gt_classes = torch.randint(num_classes, (boxes,), generator=gen)
        instances.gt_masks = BitMasks(masks)
        inputs.append(
            {
                "image": image.to(device),
                "height": size,
                "width": width,
                "instances": instances.to(device),
            }
        )
    return inputs


@dataclasses.dataclass
class Run:
    """One row being measured: its model, optimizer and FRN implementation."""

    name: str
    norm: str
    impl: str
    cfg: CfgNode
    model: nn.Module
    optimizer: torch.optim.Optimizer
    times: list[float] = dataclasses.field(default_factory=list)
    fg_rois: list[float] = dataclasses.field(default_factory=list)
    first_s: float = math.nan


def build_run(spec: BenchSpec, name: str, norm: str) -> Run:
    """Model (seeded, training mode) and SGD optimizer of one row."""
    impl = spec.impl_of(name)
    cfg = build_config(spec, norm, impl, padding_aware=name.endswith(PADDING_AWARE))
    torch.manual_seed(spec.seed)
    model = Trainer.build_model(cfg)
    model.train()
    return Run(name, norm, impl, cfg, model, build_optimizer(cfg, model))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(run: Run, batch: list[dict[str, Any]]) -> dict[str, float]:
    """One training iteration as detectron2's SimpleTrainer runs it; returns the losses.

    Raises FloatingPointError naming the row when a loss is not finite.
    """
    with frn_impl(run.impl), EventStorage() as storage:
        loss_dict = run.model(batch)
        losses = sum(loss_dict.values())
        run.optimizer.zero_grad()
        losses.backward()
        run.optimizer.step()
        fg = storage.latest().get("roi_head/num_fg_samples")
    values = {k: float(v.detach()) for k, v in loss_dict.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise FloatingPointError(f"{run.name}: non-finite loss {values}")
    if fg is not None:
        run.fg_rois.append(float(fg[0]))
    return values


def timed_step(run: Run, batch: list[dict[str, Any]], device: torch.device) -> float:
    """Seconds of one training iteration, device synchronised on both sides."""
    _sync(device)
    start = time.perf_counter()
    train_step(run, batch)
    _sync(device)
    return time.perf_counter() - start


def saved_bytes(run: Run, batch: list[dict[str, Any]]) -> int:
    """Bytes of unique non-parameter storages autograd saves in one forward pass."""
    own = {t.untyped_storage().data_ptr() for t in run.model.parameters()}
    own |= {t.untyped_storage().data_ptr() for t in run.model.buffers()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with (
        frn_impl(run.impl),
        EventStorage(),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        loss = sum(run.model(batch).values())
    del loss
    run.model.zero_grad(set_to_none=True)
    return sum(storages.values())


def cuda_peak_bytes(run: Run, batch: list[dict[str, Any]], device: torch.device) -> int:
    """Peak CUDA memory allocated during one iteration above what was allocated before."""
    gc.collect()
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    train_step(run, batch)
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - base


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def rss_worker(spec: BenchSpec, name: str, norm: str) -> dict[str, float]:
    """In this (fresh) process: warm one row up, then the rise of the peak RSS over one
    iteration. Returns rss_before_bytes, peak_rss_bytes and rss_peak_rise_bytes."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    run = build_run(spec, name, norm)
    batch = build_batch(
        spec.size,
        spec.batch,
        spec.boxes,
        run.cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        spec.device,
        spec.seed,
        spec.ragged,
        spec.width,
    )
    for _ in range(max(1, spec.warmup)):
        train_step(run, batch)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
    before = _status_kib("VmRSS")
    train_step(run, batch)
    peak = _status_kib("VmHWM")
    return {
        "rss_before_bytes": before * 1024,
        "peak_rss_bytes": peak * 1024,
        "rss_peak_rise_bytes": (peak - before) * 1024,
    }


def cpu_peak_rss(spec: BenchSpec, name: str, norm: str) -> dict[str, float]:
    """``rss_worker`` for one row in a fresh ``python -m frn_det_tools.benchmark`` process."""
    env = dict(os.environ)
    # A fixed threshold turns off glibc's adaptive one: every block >= 64 KiB is mmapped and
    # unmapped when freed, so the resident set tracks live tensors.
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    payload = json.dumps({"spec": dataclasses.asdict(spec), "name": name, "norm": norm})
    done = subprocess.run(
        [sys.executable, "-m", "frn_det_tools.benchmark", payload],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"peak RSS worker for {name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_benchmark(
    spec: BenchSpec,
    rss: bool = True,
    profile: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure every row of ``spec``; returns the rows (dicts, ``add_ratios`` applied) and
    metadata (device, threads, config differences between rows, ...; with ``profile``,
    "profile_ms": ``profile_iteration`` of each warmed-up row, after the timings)."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    runs = [build_run(spec, name, norm) for name, norm in spec.runs()]
    num_classes = runs[0].cfg.MODEL.ROI_HEADS.NUM_CLASSES
    batch = build_batch(
        spec.size,
        spec.batch,
        spec.boxes,
        num_classes,
        spec.device,
        spec.seed,
        spec.ragged,
        spec.width,
    )
    for run in runs:
        run.first_s = timed_step(run, batch, device)
        log(f"  {run.name:12s} first iteration {run.first_s:8.2f} s")
    for _ in range(spec.warmup):
        for run in runs:
            train_step(run, batch)
    for i in range(spec.iters):
        # Rotate the order each round so no norm always runs first (or after the same one).
        for run in runs[i % len(runs) :] + runs[: i % len(runs)]:
            run.times.append(timed_step(run, batch, device))
        log(
            f"  round {i + 1}/{spec.iters}: "
            + ", ".join(f"{r.name} {r.times[-1]:.2f} s" for r in runs)
        )
    rows = []
    for run in runs:
        median = statistics.median(run.times)
        row: dict[str, Any] = {
            "norm": run.name,
            "impl": run.impl if run.norm == "FRN" else None,
            "config": f"configs/{spec.config.format(norm=run.norm.lower())}"
            if not Path(spec.config).is_absolute()
            else str(config_path(spec.config, run.norm)),
            "s_per_iter": median,
            "it_per_s": 1.0 / median,
            "times_s": run.times,
            "first_iter_s": run.first_s,
            "one_off_s": run.first_s - median,
            "fg_rois_per_iter": statistics.mean(run.fg_rois) if run.fg_rois else None,
            "params": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
            "saved_bytes": saved_bytes(run, batch),
        }
        if device.type == "cuda":
            row["peak_bytes"] = cuda_peak_bytes(run, batch, device)
        rows.append(row)
    if device.type == "cpu" and rss:
        for run, row in zip(runs, rows, strict=True):
            log(f"  {run.name:12s} peak RSS (fresh process)")
            row.update(cpu_peak_rss(spec, run.name, run.norm))
            row["peak_bytes"] = row["rss_peak_rise_bytes"]
    add_ratios(rows)
    profiles = {}
    if profile:
        for run in runs:
            log(f"  {run.name:12s} profiled iteration")
            profiles[run.name] = profile_iteration(run, batch)
    meta = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "spec": dataclasses.asdict(spec),
        "peak_memory": (
            "max_memory_allocated above allocated before the iteration"
            if device.type == "cuda"
            else "rise of VmHWM over VmRSS during one iteration, fresh process per norm"
            if rss
            else None
        ),
        "config_differences": {
            k: {n: repr(v) for n, v in vals.items()}
            for k, vals in config_differences({r.name: r.cfg for r in runs}).items()
        },
    }
    if profile:
        meta["profile_ms"] = profiles
    return rows, meta


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set each row's ``vs_BN`` and ``vs_GN``: its s/iter over BN's and GN's (None where
    that norm was not measured); ``peak_vs_GN`` likewise for peak memory. In place."""
    by = {r["norm"]: r for r in rows}
    for ref in ("BN", "GN"):
        base = by.get(ref)
        for r in rows:
            r[f"vs_{ref}"] = r["s_per_iter"] / base["s_per_iter"] if base else None
    gn_peak = by.get("GN", {}).get("peak_bytes")
    for r in rows:
        peak = r.get("peak_bytes")
        r["peak_vs_GN"] = peak / gn_peak if peak is not None and gn_peak else None
        plain = by.get(r["norm"].removesuffix(PADDING_AWARE)) if r["norm"].endswith(
            PADDING_AWARE
        ) else None
        r["vs_plain"] = r["s_per_iter"] / plain["s_per_iter"] if plain else None
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    headers = ["norm", "s/iter", "it/s", "x BN", "x GN", "x plain", "first iter s"]
    headers += ["saved-for-backward MiB", "peak MiB", "fg RoIs/iter"]
    table = []
    for r in rows:
        peak = r.get("peak_bytes")
        table.append([
            r["norm"], f"{r['s_per_iter']:.3f}", f"{r['it_per_s']:.3f}",
            _fmt(r["vs_BN"], ".2f"), _fmt(r["vs_GN"], ".2f"), _fmt(r.get("vs_plain"), ".2f"),
            f"{r['first_iter_s']:.2f}", f"{r['saved_bytes'] / MIB:.1f}",
            _fmt(None if peak is None else peak / MIB, ".1f"), _fmt(r["fg_rois_per_iter"], ".0f"),
        ])  # fmt: skip
    return markdown_table(table, headers, "l" + "r" * (len(headers) - 1))


def target_summary(rows: list[dict[str, Any]]) -> str:
    """Whether each FRN row meets the targets: s/iter <= GN's, <= 1.05x BN's; peak <= GN's;
    a padding-aware row within 1.10x of the same norm without."""
    lines = []
    for r in rows:
        if not r["norm"].startswith("FRN"):
            continue
        checks = []
        if r.get("vs_plain") is not None:
            met = "met" if r["vs_plain"] <= 1.10 else "MISSED"
            checks.append(f"vs plain {r['vs_plain']:.2f} (<= 1.10: {met})")
        if r["vs_GN"] is not None:
            checks.append(
                f"vs GN {r['vs_GN']:.2f} (<= 1.00: {'met' if r['vs_GN'] <= 1 else 'MISSED'})"
            )
        if r["vs_BN"] is not None:
            checks.append(
                f"vs BN {r['vs_BN']:.2f} (<= 1.05: {'met' if r['vs_BN'] <= 1.05 else 'MISSED'})"
            )
        if r["peak_vs_GN"] is not None:
            met = "met" if r["peak_vs_GN"] <= 1 else "MISSED"
            checks.append(f"peak vs GN {r['peak_vs_GN']:.2f} (<= 1.00: {met})")
        checks.append(f"one-off first-iteration cost {r['one_off_s']:.1f} s")
        lines.append(f"- {r['norm']}: " + "; ".join(checks))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Where the time goes: one profiled iteration, CPU time by module type and autograd node.

_RANGE = "fwd::"
_BACKWARD = "autograd::engine::evaluate_function: "
_OPTIMIZER = "optimizer.step"
_ACTIVATIONS = {"aten::relu", "aten::relu_", "aten::clamp_min", "aten::maximum"}


@contextlib.contextmanager
def _module_ranges(model: nn.Module) -> Iterator[None]:
    """A profiler range "fwd::<module class>" around every module's forward."""
    stack: list[Any] = []

    def enter(module: nn.Module, _: Any) -> None:
        rf = torch.autograd.profiler.record_function(_RANGE + type(module).__name__)
        rf.__enter__()
        stack.append(rf)

    def leave(module: nn.Module, _: Any, __: Any) -> None:
        stack.pop().__exit__(None, None, None)

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _category(event: Any) -> str | None:
    """The bucket of a profiler event, or None where its time is counted elsewhere."""
    name = event.name
    if name.startswith(_BACKWARD):
        return "bwd " + name[len(_BACKWARD) :]
    if name == _OPTIMIZER:
        return "optimizer step"
    parent = event.cpu_parent
    if name.startswith(_RANGE) or (parent is not None and not parent.name.startswith(_RANGE)):
        return None  # a range, or an op inside another op or inside backward/optimizer
    if parent is None:
        return "other (outside modules)"
    module = parent.name[len(_RANGE) :]
    if name in _ACTIVATIONS and "Norm" not in module and module != "TLU":
        return "fwd activation (F.relu etc.)"
    return "fwd " + module


def profile_iteration(run: Run, batch: list[dict[str, Any]]) -> dict[str, float]:
    """CPU milliseconds of one training iteration of ``run``, by bucket.

    Forward time goes to the innermost module whose forward issued the op ("fwd
    Conv2d" is the convolution alone; ReLUs that stock code applies after a norm are
    "fwd activation"); backward time to each autograd node ("bwd ConvolutionBackward0");
    "total" is the wall time of the iteration under the profiler.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.device(run.cfg.MODEL.DEVICE).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    step = run.optimizer.step

    def profiled_step(*args: Any, **kwargs: Any) -> Any:
        with torch.autograd.profiler.record_function(_OPTIMIZER):
            return step(*args, **kwargs)

    run.optimizer.step = profiled_step  # type: ignore[method-assign]
    try:
        with _module_ranges(run.model), profile(activities=activities) as prof:
            start = time.perf_counter()
            train_step(run, batch)
            total = time.perf_counter() - start
    finally:
        del run.optimizer.step
    buckets: dict[str, float] = {}
    for event in prof.events():
        category = _category(event)
        if category is not None:
            buckets[category] = buckets.get(category, 0.0) + event.cpu_time_total / 1e3
    buckets["total"] = total * 1e3
    return buckets


def profile_table(profiles: dict[str, dict[str, float]], top: int = 25) -> str:
    """Markdown: the ``top`` buckets (by the largest time in any row), one column per row."""
    names = list(profiles)
    buckets = {b for p in profiles.values() for b in p if b != "total"}
    ranked = sorted(buckets, key=lambda b: -max(p.get(b, 0.0) for p in profiles.values()))
    table = [
        [bucket] + [f"{profiles[n].get(bucket, 0.0):.0f}" for n in names] for bucket in ranked[:top]
    ]
    rest = ranked[top:]
    if rest:
        cells = [f"{sum(profiles[n].get(b, 0.0) for b in rest):.0f}" for n in names]
        table.append([f"({len(rest)} more buckets)", *cells])
    table.append(["total (wall, profiled)"] + [f"{profiles[n]['total']:.0f}" for n in names])
    return markdown_table(table, ["bucket (CPU ms)", *names], "l" + "r" * len(names))


def _worker_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(description="peak RSS of one row (see cpu_peak_rss)")
    parser.add_argument("payload", help="JSON: {spec, name, norm}")
    payload = json.loads(parser.parse_args(argv).payload)
    fields = payload["spec"]
    spec = BenchSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    print(json.dumps(rss_worker(spec, payload["name"], payload["norm"])))


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
