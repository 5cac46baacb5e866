"""A sweep's results: AP per norm and images per GPU as a table, CSV, JSON and the plot
frn-det exists for, plus each run's training curves.

Reads the run folders ``tools/sweep.py`` lays out (``OUTPUT/<config stem>/<norm>/ipg<N>/
seed<S>/``). A run's final results come from its DONE.json, which the sweep writes from
detectron2's metrics.json once train_net has exited cleanly with a final model; a folder
without DONE.json that holds a final model and an evaluation at the last iteration in
metrics.json (trained by train_net directly, or killed during the sweep's bookkeeping)
counts as finished too. Every other run is shown as "unfinished (iter k/N)", "failed (...)"
or "not started", never dropped; a run submitted to Slurm (``--launcher slurm``) also shows
its job: pending, running, or ended without a result, with the log to read.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from frn_det_tools import markdown
from frn_det_tools.run_folders import METRICS_FILE, RunKey, find_runs, norm_order
from frn_det_tools.slurm import JobStatus, job_statuses
from frn_det_tools.sweep import RunState, metrics_by_iteration, read_metrics, read_state

__all__ = [
    "METRICS",
    "Point",
    "RunRecord",
    "collect_runs",
    "group_points",
    "main",
    "markdown_table",
    "metric_value",
    "plot_ap_vs_ims_per_gpu",
    "plot_training_curves",
    "summarize",
    "training_curves_figure",
    "write_csv",
    "write_json",
]

# (detectron2's metrics.json key, label): COCO box AP and mask AP, in percent.
METRICS = (("bbox/AP", "box AP"), ("segm/AP", "mask AP"))


def metric_value(results: Mapping[str, Any], metric: str) -> float | None:
    """``results[metric]``; with several test datasets detectron2 prefixes the dataset
    ("coco_2017_val/bbox/AP"), and the first dataset's value is taken. None if absent."""
    if metric in results:
        return float(results[metric])
    for key, value in results.items():
        if key.endswith("/" + metric):
            return float(value)
    return None


@dataclass
class RunRecord:
    """One run folder: where it sits in the grid and what it says about its run."""

    key: RunKey
    folder: Path
    state: RunState
    job: JobStatus | None = None  # the Slurm job of a run submitted with --launcher slurm

    @property
    def finished(self) -> bool:
        """Done per DONE.json, or trained to the end with a final evaluation recorded."""
        return self.state.status == "done" or bool(self.state.final_model and self.state.results)

    def describe(self) -> str:
        """ "done", "unfinished (iter 120/400)", "failed (exit 1, iter 3/400)", ..., with
        the run's Slurm job if it has one ("pending: Slurm job 12 (Priority)")."""
        if self.finished:
            return "done"
        return self.job.describe(self.state) if self.job else self.state.describe()

    @property
    def num_gpus(self) -> int | None:
        """Processes the run trains with, from RUN.json / DONE.json (None if unknown)."""
        return self.state.done.get("num_gpus", self.state.plan.get("num_gpus"))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the run (NaN results become null): its design
        ("fixed_images" or "fixed_batch"), norm, padding_aware, images_per_gpu, gpus,
        total_batch, seed, iterations, box_AP and mask_AP, then the run's details."""
        plan = self.state.plan  # RUN.json, written by the sweep when the run started
        schedule = plan.get("schedule", {})
        results = {k: _finite(v) for k, v in self.state.results.items()}
        return {
            "design": plan.get("design", "fixed_images"),
            "norm": self.key.norm,
            "padding_aware": plan.get("padding_aware", self.key.norm.endswith("_pa")),
            "images_per_gpu": self.key.ims_per_gpu,
            "gpus": self.num_gpus,
            "total_batch": schedule.get("ims_per_batch"),
            "seed": self.key.seed,
            "iterations": self.state.max_iter,
            "box_AP": results.get("bbox/AP"),
            "mask_AP": results.get("segm/AP"),
            # With TEST.PRECISE_BN.EVAL_RUNNING: the same model with its running statistics.
            "box_AP_running": results.get("running_stats/bbox/AP"),
            "mask_AP_running": results.get("running_stats/segm/AP"),
            "config": self.key.config_stem,
            "ims_per_gpu": self.key.ims_per_gpu,
            "num_gpus": self.num_gpus,
            "folder": os.fspath(self.folder),
            "status": "done" if self.finished else self.state.status,
            "diverged": self.state.diverged,
            "description": self.describe(),
            "iteration": self.state.iteration,
            "max_iter": self.state.max_iter,
            "results": results,
            "job": self.job.to_json() if self.job else None,
        }


def _finite(value: Any) -> Any:
    # Strict JSON has no NaN; COCO AP is NaN where a model predicted nothing, and
    # metrics.json (hence DONE.json) holds it as the string "NaN".
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return None
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class Point:
    """One point of the grid (config, norm, images per GPU) with its repeats."""

    config_stem: str
    norm: str
    ims_per_gpu: int
    runs: list[RunRecord]

    def values(self, metric: str) -> list[float]:
        """``metric`` of every finished repeat that reports it."""
        found = (metric_value(r.state.results, metric) for r in self.runs if r.finished)
        return [v for v in found if v is not None]

    def stats(self, metric: str) -> dict[str, float | int] | None:
        """mean, std (sample, 0 for one repeat), min, max and n of ``metric``; None if no
        finished repeat reports it."""
        values = self.values(metric)
        if not values:
            return None
        n = len(values)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": n}

    def pending(self) -> list[str]:
        """How each repeat that has not finished stands."""
        return [r.describe() for r in self.runs if not r.finished]


def collect_runs(output: str | os.PathLike) -> list[RunRecord]:
    """Every run folder under ``output`` with its state (and Slurm job), in grid order."""
    found = find_runs(output)
    # The jobs first: one that ends while the folders are read is then read with its result.
    jobs = job_statuses(folder for _, folder in found)
    return [
        RunRecord(key, folder, read_state(folder), jobs.get(folder)) for key, folder in found
    ]


def group_points(records: Iterable[RunRecord]) -> list[Point]:
    """The runs grouped into grid points (repeats together), in grid order."""
    points: dict[tuple[str, str, int], Point] = {}
    for record in records:
        k = record.key
        point = points.setdefault(
            (k.config_stem, k.norm, k.ims_per_gpu), Point(k.config_stem, k.norm, k.ims_per_gpu, [])
        )
        point.runs.append(record)
    return sorted(points.values(), key=lambda p: (p.config_stem, norm_order(p.norm), p.ims_per_gpu))


def _metrics_of(points: Sequence[Point]) -> list[tuple[str, str]]:
    # A Faster R-CNN config has no mask AP: leave the column out rather than fill it with "-".
    present = [m for m in METRICS if any(p.values(m[0]) for p in points)]
    return present or [METRICS[0]]


def _by_config(points: Sequence[Point]) -> dict[str, list[Point]]:
    grouped: dict[str, list[Point]] = {}
    for point in points:
        grouped.setdefault(point.config_stem, []).append(point)
    return grouped


def _norm_label(norm: str, points: Sequence[Point]) -> str:
    gpus = {r.num_gpus for p in points if p.norm == norm for r in p.runs} - {None}
    if gpus and gpus != {1}:
        counts = "/".join(str(g) for g in sorted(gpus))
        return f"{norm} ({counts} processes)"
    return norm


def _cell(point: Point, metrics: Sequence[tuple[str, str]]) -> str:
    finished = sum(r.finished for r in point.runs)
    texts = []
    if finished:
        parts = []
        for metric, _ in metrics:
            stats = point.stats(metric)
            if stats is None:
                parts.append("-")
            else:
                spread = f" ± {stats['std']:.1f}" if stats["n"] > 1 else ""
                parts.append(f"{stats['mean']:.1f}{spread}")
        texts.append(" / ".join(parts) + (f" (n={finished})" if finished > 1 else ""))
    return "; ".join(texts + point.pending())


def markdown_table(points: Sequence[Point], title: str = "Sweep results") -> str:
    """A Markdown table per config: rows norms, columns images per GPU, cells box AP /
    mask AP as mean ± sample std over finished repeats, with runs that have not finished
    described in the cell."""
    lines = [f"# {title}", ""]
    for stem, group in _by_config(points).items():
        metrics = _metrics_of(group)
        sizes = sorted({p.ims_per_gpu for p in group})
        norms = sorted({p.norm for p in group}, key=norm_order)
        cells = {(p.norm, p.ims_per_gpu): _cell(p, metrics) for p in group}
        lines += [
            f"## {stem}",
            "",
            f"{' / '.join(label for _, label in metrics)} (COCO, %): mean ± std over the "
            "finished repeats (n, when more than one); runs that did not finish are listed.",
            "",
        ]
        headers = ["norm", *(f"{s} image{'s' if s > 1 else ''}/GPU" for s in sizes)]
        rows = [
            [_norm_label(norm, group), *(cells.get((norm, s), "no run") for s in sizes)]
            for norm in norms
        ]
        lines += [markdown.markdown_table(rows, headers), ""]
    if not points:
        lines += ["No run folders found.", ""]
    return "\n".join(lines)


def _point_row(point: Point) -> dict[str, Any]:
    gpus = sorted({r.num_gpus for r in point.runs} - {None})
    row: dict[str, Any] = {
        "config": point.config_stem,
        "norm": point.norm,
        "ims_per_gpu": point.ims_per_gpu,
        "num_gpus": "/".join(str(g) for g in gpus),
        "runs": len(point.runs),
        "finished": sum(r.finished for r in point.runs),
    }
    for metric, label in METRICS:
        stats = point.stats(metric) or {}
        for stat in ("mean", "std", "min", "max"):
            row[f"{label.replace(' ', '_')}_{stat}"] = _finite(stats.get(stat))
    row["not_finished"] = "; ".join(point.pending())
    return row


def write_csv(points: Sequence[Point], path: str | os.PathLike) -> None:
    """One row per grid point: counts, box/mask AP mean, std, min, max, and the runs that
    did not finish (empty cells where there is no value)."""
    rows = [_point_row(p) for p in points]
    fields = list(_point_row(Point("", "", 1, [])).keys())
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_json(
    points: Sequence[Point], records: Sequence[RunRecord], path: str | os.PathLike
) -> None:
    """``{"points": [CSV rows], "runs": [every run]}``, strict JSON (NaN as null)."""
    data = {"points": [_point_row(p) for p in points], "runs": [r.to_json() for r in records]}
    Path(path).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _log2_axis(ax: Any, sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(s) for s in sizes])
    if len(sizes) == 1:
        ax.set_xlim(sizes[0] / 2, sizes[0] * 2)


def plot_ap_vs_ims_per_gpu(points: Sequence[Point], path: str | os.PathLike) -> None:
    """AP against images per GPU (log2 axis), one line per norm, error bars (sample std)
    where a point has several finished repeats; a row of subplots per config, a column
    per metric (box AP, mask AP). Points without a finished run are listed under the axes.
    """
    groups = _by_config(points)
    columns = [m for m in METRICS if any(p.values(m[0]) for p in points)] or [METRICS[0]]
    rows = max(len(groups), 1)
    # One colour per norm in every subplot, so a norm is recognisable across configs.
    all_norms = sorted({p.norm for p in points}, key=norm_order)
    colors = {norm: f"C{i % 10}" for i, norm in enumerate(all_norms)}
    fig = Figure(figsize=(5.0 * len(columns), 3.8 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for row, (stem, group) in enumerate(groups.items()):
        sizes = sorted({p.ims_per_gpu for p in group})
        norms = sorted({p.norm for p in group}, key=norm_order)
        missing = [
            f"{p.norm}@{p.ims_per_gpu}" for p in group if not any(r.finished for r in p.runs)
        ]
        for col, (metric, label) in enumerate(columns):
            ax = axes[row][col]
            ax.set_title(f"{stem}: {label}", fontsize=10)
            drawn = False
            for norm in norms:
                line = [(p.ims_per_gpu, p.stats(metric)) for p in group if p.norm == norm]
                line = [(x, s) for x, s in line if s is not None]
                if not line:
                    continue
                drawn = True
                ax.errorbar(
                    [x for x, _ in line],
                    [s["mean"] for _, s in line],
                    yerr=[s["std"] for _, s in line],
                    marker="o",
                    capsize=3,
                    color=colors[norm],
                    label=_norm_label(norm, group),
                )
            if not drawn:
                ax.text(0.5, 0.5, f"no {label}", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.legend(fontsize=8)
            _log2_axis(ax, sizes)
            ax.set_xlabel("images per GPU")
            ax.set_ylabel(f"{label} (%)")
            ax.grid(True, alpha=0.3)
            if missing:
                ax.text(
                    0.0,
                    -0.28,
                    "not finished: " + ", ".join(missing),
                    transform=ax.transAxes,
                    fontsize=7,
                    va="top",
                    wrap=True,
                )
    if not groups:
        axes[0][0].text(0.5, 0.5, "no runs", ha="center", va="center")
    fig.savefig(path, dpi=120)


# Up to this many logged points a curve gets a marker at each one: a short run (or one
# that just started) logs a handful, which a bare line would draw as nothing.
MARKER_POINTS = 60
# Loss terms of detectron2's R-CNNs and RetinaNet, drawn thinly under total_loss.
_LOSS_RE = re.compile(r"^loss_")


def _number(value: Any) -> float:
    # metrics.json holds non-finite values as strings ("NaN", "Infinity"); a NaN is a gap.
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _line_style(count: int) -> dict[str, Any]:
    return {"marker": "o", "markersize": 3} if count <= MARKER_POINTS else {}


def training_curves_figure(
    by_iteration: Mapping[int, Mapping[str, Any]], title: str = "", max_iter: int | None = None
) -> Figure:
    """The figure ``plot_training_curves`` saves, from metrics.json records merged per
    iteration (``frn_det_tools.sweep.metrics_by_iteration``): total loss (and each ``loss_*``
    term, thin) over iterations on the left, box and mask AP at each evaluation on the
    right, on one iteration axis from 0 to ``max_iter`` (else the last iteration logged).
    Curves of up to MARKER_POINTS points get markers; AP points are labelled with their
    value."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    loss_ax, ap_ax = fig.subplots(1, 2, sharex=True)
    losses = [
        (i + 1, _number(r["total_loss"])) for i, r in by_iteration.items() if "total_loss" in r
    ]
    if losses:
        terms = sorted({k for r in by_iteration.values() for k in r if _LOSS_RE.match(k)})
        for term in terms:
            points = [(i + 1, _number(r[term])) for i, r in by_iteration.items() if term in r]
            loss_ax.plot(*zip(*points, strict=True), lw=0.8, alpha=0.6, label=term,
                         **_line_style(len(points)))  # fmt: skip
        loss_ax.plot(*zip(*losses, strict=True), lw=1.6, color="k", label="total_loss",
                     **_line_style(len(losses)))  # fmt: skip
        loss_ax.set_ylim(bottom=0)
        loss_ax.legend(fontsize=7, ncols=2)
    else:
        loss_ax.text(
            0.5, 0.5, "no losses yet", ha="center", va="center", transform=loss_ax.transAxes
        )
    loss_ax.set(title="loss", xlabel="iterations trained", ylabel="loss")
    drawn = []
    undefined: set[int] = set()
    for metric, label in METRICS:
        # detectron2 logs an evaluation made during training with the index of the step
        # before it (99 after 100 steps), and the one after training at MAX_ITER itself.
        points = [
            (i + 1 if "total_loss" in r else i, metric_value(r, metric))
            for i, r in by_iteration.items()
        ]
        # COCO AP is NaN when a model predicted nothing.
        undefined.update(i for i, v in points if v is not None and not math.isfinite(v))
        points = [(i, v) for i, v in points if v is not None and math.isfinite(v)]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        (line,) = ap_ax.plot(xs, ys, label=label, **{**_line_style(len(points)), "markersize": 5})
        drawn.extend(ys)
        if len(points) <= 12:
            for x, y in points:
                ap_ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 5),
                               ha="center", fontsize=7, color=line.get_color())  # fmt: skip
    if drawn:
        ap_ax.set_ylim(0, max(max(drawn) * 1.2, 1.0))
        ap_ax.legend(fontsize=8)
    elif not undefined:
        ap_ax.text(
            0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ap_ax.transAxes
        )
    if undefined:
        at = ", ".join(str(i) for i in sorted(undefined))
        ap_ax.text(0.5, 0.5 if not drawn else 0.08, f"AP undefined (nothing predicted) at {at}",
                   ha="center", va="center", transform=ap_ax.transAxes, fontsize=8)  # fmt: skip
    ap_ax.set(title="AP at each evaluation", xlabel="iterations trained", ylabel="AP (%)")
    last = max(by_iteration, default=0) + 1
    loss_ax.set_xlim(0, max(max_iter or 0, last, 1) * 1.03)
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (loss_ax, ap_ax):
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_training_curves(
    metrics_path: str | os.PathLike,
    path: str | os.PathLike,
    title: str = "",
    max_iter: int | None = None,
) -> int:
    """Loss and AP (box, mask) over iterations from a detectron2 ``metrics.json``, saved
    as a PNG (``training_curves_figure``). Unreadable lines (a torn last line of a killed
    run) are skipped; where a resumed run repeats iterations the later values are drawn.

    Returns:
        The number of lines skipped as unreadable.
    """
    records, skipped = read_metrics(metrics_path)
    if skipped:
        title += f" ({skipped} unreadable line(s) skipped)"
    fig = training_curves_figure(metrics_by_iteration(records), title, max_iter)
    fig.savefig(path, dpi=100)
    return skipped


def summarize(
    output: str | os.PathLike, dest: str | os.PathLike | None = None, curves: bool = True
) -> dict[str, Path]:
    """Write summary.md, summary.csv, summary.json, ap_vs_ims_per_gpu.png and (``curves``)
    curves/<config>/<norm>_ipg<N>_seed<S>.png for the sweep under ``output``, into ``dest``
    (default ``output/summary``). Returns the paths written, by name.

    Raises:
        FileNotFoundError: naming ``output`` when it is missing, is not a folder or holds no
            run folders (nothing is written then).
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise FileNotFoundError(f"sweep output {os.fspath(output)!r} is a file, not a folder")
    if not output.is_dir():
        raise FileNotFoundError(f"sweep output folder {os.fspath(output)!r} does not exist")
    records = collect_runs(output)
    if not records:
        raise FileNotFoundError(
            f"no run folders (OUT/<config>/<norm>/ipg<N>/seed<S>/) under {os.fspath(output)!r}: "
            "is it a sweep's --output folder?"
        )
    dest = Path(dest) if dest is not None else output / "summary"
    dest.mkdir(parents=True, exist_ok=True)
    points = group_points(records)
    written = {
        "table": dest / "summary.md",
        "csv": dest / "summary.csv",
        "json": dest / "summary.json",
        "plot": dest / "ap_vs_ims_per_gpu.png",
    }
    written["table"].write_text(
        markdown_table(points, f"Sweep results: {output}"), encoding="utf-8"
    )
    write_csv(points, written["csv"])
    write_json(points, records, written["json"])
    plot_ap_vs_ims_per_gpu(points, written["plot"])
    if curves:
        for record in records:
            metrics = record.folder / METRICS_FILE
            if not metrics.is_file():
                continue
            k = record.key
            png = dest / "curves" / k.config_stem / f"{k.norm}_ipg{k.ims_per_gpu}_seed{k.seed}.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            images = f"{k.ims_per_gpu} image{'s' if k.ims_per_gpu > 1 else ''}/GPU"
            title = f"{k.config_stem} {k.norm}, {images}, seed {k.seed}"
            title += f": {record.describe()}"
            plot_training_curves(metrics, png, title, record.state.max_iter)
            written[f"curves:{record.folder.relative_to(output)}"] = png
    return written


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/summarize.py``."""
    parser = argparse.ArgumentParser(
        prog="summarize.py",
        description="Tabulate and plot the runs of a sweep (tools/sweep.py) output folder.",
    )
    parser.add_argument("output", help="the sweep's --output folder")
    parser.add_argument("--dest", default=None, help="where to write (default: OUTPUT/summary)")
    parser.add_argument(
        "--no-curves", action="store_true", help="skip the per-run training-curve plots"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tools/summarize.py`` with ``argv``; prints the table and what was written."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    try:
        written = summarize(args.output, args.dest, curves=not args.no_curves)
    except FileNotFoundError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(written["table"].read_text(encoding="utf-8"))
    curves = sum(name.startswith("curves:") for name in written)
    for name in ("table", "csv", "json", "plot"):
        print(f"wrote {written[name]}")
    if curves:
        print(f"wrote {curves} training-curve plot(s) under {written['plot'].parent / 'curves'}")
    return 0
