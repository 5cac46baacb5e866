"""The batch-dependence report (docs/batch_dependence/): tables, plot and curves from the run
folders of the fixed-batch grid and of the learning-rate search before it.

The grid (``tools/sweep.py --total-batch T``) trains every norm at every layout (T/N
processes of N images) with one total batch, schedule and set of step images, so a norm's
AP moving with N is its dependence on the per-GPU batch. What this module adds to
``summarize``: the search's table and choice (the highest final box AP of each norm at its
one layout), AP at each evaluation averaged over seeds (do the curves flatten?), per norm
the change of AP from the largest to the smallest per-GPU batch against its standard
error over seeds, the cost of a run per layout, and the schedule probe's constant-LR
curves that chose the schedule's length.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from frn_det_tools.markdown import markdown_table
from frn_det_tools.run_folders import MACHINE_FILE, METRICS_FILE, norm_order
from frn_det_tools.summarize import (
    METRICS,
    Point,
    RunRecord,
    collect_runs,
    group_points,
    metric_value,
    plot_ap_vs_ims_per_gpu,
)
from frn_det_tools.sweep import metrics_by_iteration, read_metrics

__all__ = [
    "LayoutEffect",
    "chosen_learning_rates",
    "cost_rows",
    "layout_effects",
    "lr_search_rows",
    "machine_rows",
    "unfinished_search_runs",
    "main",
    "mean_curves",
    "probe_curves",
    "schedule_rows",
    "write_report",
]

# The same model's AP with the running BN statistics, before precise BN replaced them
# (TEST.PRECISE_BN.EVAL_RUNNING).
RUNNING_METRICS = (("running_stats/bbox/AP", "box AP (running stats)"),
                   ("running_stats/segm/AP", "mask AP (running stats)"))  # fmt: skip
_LR_DIR_RE = re.compile(r"^lr(?P<lr>[0-9.eE+-]+)$")


def probe_curves(root: str | os.PathLike) -> dict[str, list[tuple[int, float, float | None]]]:
    """The schedule probe: for each train_net output folder ``root``/<name>/ with a
    metrics.json, [(iterations trained, box AP, mask AP)] at each evaluation, by name.

    Raises:
        FileNotFoundError: naming ``root`` when no folder under it has a metrics.json.
    """
    curves = {}
    for metrics in sorted(Path(root).glob(f"*/{METRICS_FILE}")):
        by_iteration = metrics_by_iteration(read_metrics(metrics)[0])
        box = _eval_points(by_iteration, "bbox/AP")
        mask = _eval_points(by_iteration, "segm/AP")
        curves[metrics.parent.name] = [(i, box[i], mask.get(i)) for i in sorted(box)]
    if not curves:
        raise FileNotFoundError(f"no <run>/{METRICS_FILE} under {os.fspath(root)!r}")
    return curves


def probe_markdown(curves: Mapping[str, Sequence[tuple[int, float, float | None]]]) -> str:
    """The probe's box AP per run (rows) at each evaluation (columns)."""
    steps = sorted({c[0] for curve in curves.values() for c in curve})
    table = []
    for name, curve in curves.items():
        at = {c[0]: c[1] for c in curve}
        table.append([name, *(f"{at[i]:.1f}" if i in at else "-" for i in steps)])
    return markdown_table(table, ["run", *(str(i) for i in steps)])


def _search_records(
    root: str | os.PathLike, settled: bool = True
) -> list[tuple[float, RunRecord]]:
    """(LR, record) of the runs under ``root``/lr<LR>/ that finished or diverged
    (``settled``), or of the others."""
    found = []
    for folder in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        match = _LR_DIR_RE.match(folder.name)
        if match and folder.is_dir():
            found += [(float(match["lr"]), record) for record in collect_runs(folder)
                      if (record.finished or record.state.diverged) == settled]  # fmt: skip
    return found


def lr_search_rows(root: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per finished or diverged run under ``root``/lr<LR>/ (each a sweep's
    --output): norm, images per GPU, seed, base_lr, box_AP, mask_AP (None for a diverged
    run), diverged, in norm then LR order. A diverged run is a result of the search (that LR
    is too high for that norm); a run still to train or failed otherwise is left out
    (``unfinished_search_runs`` names them)."""
    rows = []
    for lr, record in _search_records(root):
        results = record.state.results if record.finished else {}
        rows.append({
            "norm": record.key.norm,
            "images_per_gpu": record.key.ims_per_gpu,
            "seed": record.key.seed,
            "base_lr": lr,
            "box_AP": metric_value(results, "bbox/AP"),
            "mask_AP": metric_value(results, "segm/AP"),
            "diverged": not record.finished,
        })  # fmt: skip
    return sorted(rows, key=lambda r: (norm_order(r["norm"]), r["base_lr"]))


def unfinished_search_runs(root: str | os.PathLike) -> list[str]:
    """The runs under ``root``/lr<LR>/ that neither finished nor diverged, each as
    "<folder>: <what it says>" (a search with any cannot choose yet)."""
    return [
        f"{os.fspath(record.folder)}: {record.describe()}"
        for _, record in _search_records(root, settled=False)
    ]


def chosen_learning_rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each norm's base_lr with the highest final box AP in ``rows`` (the same rule for
    every norm; a tie goes to the smaller learning rate)."""
    best: dict[str, tuple[float, float]] = {}
    for row in rows:
        ap = row["box_AP"]
        if ap is None or not math.isfinite(ap):
            continue
        key = (ap, -row["base_lr"])
        if row["norm"] not in best or key > best[row["norm"]]:
            best[row["norm"]] = key
    return {norm: -key[1] for norm, key in best.items()}


@dataclass
class LayoutEffect:
    """How one norm's AP moves from the largest per-GPU batch to the smallest."""

    norm: str
    metric: str
    large: int  # images per GPU
    small: int
    large_mean: float
    small_mean: float
    difference: float  # small - large
    standard_error: float  # of the difference, over seeds (Welch)
    n: tuple[int, int]

    @property
    def exceeds_spread(self) -> bool:
        """Whether the difference is more than twice its standard error (never with one
        seed at either end: no spread to compare with)."""
        return math.isfinite(self.standard_error) and abs(self.difference) > 2 * self.standard_error


def layout_effects(points: Sequence[Point], metric: str = "bbox/AP") -> list[LayoutEffect]:
    """Per norm, ``metric`` at the smallest minus at the largest images per GPU, with the
    standard error of that difference, sqrt(s_small^2/n_small + s_large^2/n_large), from
    the sample std over seeds. Norms lacking either end are left out."""
    effects = []
    for norm in sorted({p.norm for p in points}, key=norm_order):
        mine = {p.ims_per_gpu: p.stats(metric) for p in points if p.norm == norm}
        mine = {n: s for n, s in mine.items() if s is not None}
        if len(mine) < 2:
            continue
        small, large = min(mine), max(mine)
        s, big = mine[small], mine[large]
        error = (math.sqrt(s["std"] ** 2 / s["n"] + big["std"] ** 2 / big["n"])
                 if min(s["n"], big["n"]) > 1 else math.nan)  # fmt: skip
        effects.append(LayoutEffect(
            norm, metric, large, small, big["mean"], s["mean"], s["mean"] - big["mean"], error,
            (s["n"], big["n"]),
        ))  # fmt: skip
    return effects


def _eval_points(by_iteration: Mapping[int, Mapping[str, Any]], metric: str) -> dict[int, float]:
    # detectron2 logs an evaluation during training at the index of the step before it (49
    # after 50 steps) and the one after training at MAX_ITER: both become steps trained.
    found = {}
    for i, record in by_iteration.items():
        value = metric_value(record, metric)
        if value is not None and math.isfinite(value):
            found[i + 1 if "total_loss" in record else i] = value
    return found


def mean_curves(
    records: Sequence[RunRecord], metric: str = "bbox/AP"
) -> dict[tuple[str, int], list[tuple[int, float, float, int]]]:
    """(norm, images per GPU) -> [(iterations trained, mean, sample std, n)] of ``metric`` at
    each evaluation, over the finished seeds of that point."""
    values: dict[tuple[str, int], dict[int, list[float]]] = {}
    for record in records:
        if not record.finished:
            continue
        lines, _ = read_metrics(record.folder / METRICS_FILE)
        at = values.setdefault((record.key.norm, record.key.ims_per_gpu), {})
        for step, value in _eval_points(metrics_by_iteration(lines), metric).items():
            at.setdefault(step, []).append(value)
    curves = {}
    for key, steps in values.items():
        curve = []
        for step in sorted(steps):
            vs = steps[step]
            mean = sum(vs) / len(vs)
            std = math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1)) if len(vs) > 1 else 0
            curve.append((step, mean, std, len(vs)))
        curves[key] = curve
    return curves


def plot_mean_curves(
    curves: Mapping[tuple[str, int], Sequence[tuple[int, float, float, int]]],
    path: str | os.PathLike,
    label: str = "box AP",
) -> None:
    """One subplot per norm: ``label`` at each evaluation, one line per images per GPU (mean
    over seeds, shaded +- std)."""
    norms = sorted({norm for norm, _ in curves}, key=norm_order)
    columns = min(3, max(len(norms), 1))
    rows = max(math.ceil(len(norms) / columns), 1)
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True)
    sizes = sorted({n for _, n in curves})
    for index, norm in enumerate(norms):
        ax = axes[index // columns][index % columns]
        for j, size in enumerate(sizes):
            curve = curves.get((norm, size))
            if not curve:
                continue
            steps = [c[0] for c in curve]
            means = [c[1] for c in curve]
            stds = [c[2] for c in curve]
            ax.plot(steps, means, marker="o", markersize=3, color=f"C{j}", label=f"{size}/GPU")
            ax.fill_between(steps, [m - s for m, s in zip(means, stds, strict=True)],
                            [m + s for m, s in zip(means, stds, strict=True)],
                            color=f"C{j}", alpha=0.15)  # fmt: skip
        ax.set(title=norm, xlabel="iterations trained", ylabel=f"{label} (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for index in range(len(norms), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    fig.savefig(path, dpi=110)


SCHEDULE_POINTS = (("early", 0.6), ("before_step", 0.7), ("late", 0.8), ("last_but_one", 0.9))


def schedule_rows(
    curves: Mapping[tuple[str, int], Sequence[tuple[int, float, float, int]]],
    points: Sequence[tuple[str, float]] = SCHEDULE_POINTS,
) -> list[dict[str, Any]]:
    """Per (norm, images per GPU) with at least 3 evaluations: the mean box AP at the
    evaluation nearest each named fraction of the last one (``early`` 3/5, ``before_step``
    7/10, ``late`` 4/5, ``last_but_one`` 9/10) and at the last (``end``), in norm then
    layout order."""
    rows = []
    for (norm, size), curve in sorted(curves.items(),
                                      key=lambda kv: (norm_order(kv[0][0]), kv[0][1])):  # fmt: skip
        if len(curve) < 3:
            continue
        end = curve[-1]
        row = {"norm": norm, "images_per_gpu": size}
        for name, fraction in points:
            row[name] = min(curve, key=lambda c, f=fraction: abs(c[0] - f * end[0]))[1]
        rows.append({**row, "end": end[1]})
    return rows


def _fmt(stats: Mapping[str, Any] | None) -> str:
    if stats is None:
        return "-"
    spread = f" ± {stats['std']:.1f}" if stats["n"] > 1 else ""
    return f"{stats['mean']:.1f}{spread} (n={stats['n']})"


def _cell(point: Point | None, metric: str) -> str:
    """A point's cell: mean ± std (n), and how many of its runs diverged, if any."""
    if point is None:
        return "-"
    text = _fmt(point.stats(metric))
    diverged = sum(r.state.diverged for r in point.runs)
    if not diverged:
        return text
    note = f"{diverged} of {len(point.runs)} diverged"
    return note if text == "-" else f"{text}; {note}"


def results_markdown(
    points: Sequence[Point],
    search: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, float],
    curves: Mapping[tuple[str, int], Sequence[tuple[int, float, float, int]]],
    costs: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The page's tables: the search, AP per norm and layout (precise and, where run,
    running BN statistics), the layout effect per norm, the gains along the curves and the
    cost of a run per layout."""
    out = []
    if search:
        lrs = sorted({r["base_lr"] for r in search})
        table = []
        for norm in sorted({r["norm"] for r in search}, key=norm_order):
            row = [norm]
            for lr in lrs:
                hit = [r for r in search if r["norm"] == norm and r["base_lr"] == lr]
                if hit and hit[0].get("diverged"):
                    row.append("diverged")
                else:
                    row.append(f"{hit[0]['box_AP']:.1f}" if hit and hit[0]["box_AP"] is not None
                               else "-")  # fmt: skip
            row.append(f"{chosen[norm]:g}" if norm in chosen else "-")
            table.append(row)
        headers = ["norm", *(f"box AP at {lr:g}" for lr in lrs), "chosen BASE_LR"]
        out += ["### Learning-rate search", "", markdown_table(table, headers), ""]
    sizes = sorted({p.ims_per_gpu for p in points})
    for metric, label in (*METRICS, *RUNNING_METRICS):
        table = []
        for norm in sorted({p.norm for p in points}, key=norm_order):
            row = [norm] + [
                _cell(next((p for p in points if p.norm == norm and p.ims_per_gpu == n), None),
                      metric)
                for n in sizes
            ]  # fmt: skip
            if any(cell != "-" for cell in row[1:]):
                table.append(row)
        if table:
            headers = ["norm", *(f"{n} images/GPU" for n in sizes)]
            out += [f"### {label}: mean ± std over seeds", "",
                    markdown_table(table, headers), ""]  # fmt: skip
    for metric, label in METRICS:
        effects = layout_effects(points, metric)
        if not effects:
            continue
        table = [
            [e.norm, f"{e.large_mean:.1f}", f"{e.small_mean:.1f}",
             f"{e.difference:+.1f} ± {e.standard_error:.1f}"
             if math.isfinite(e.standard_error) else f"{e.difference:+.1f} (one seed)",
             "yes" if e.exceeds_spread else "no" if math.isfinite(e.standard_error) else "-"]
            for e in effects
        ]  # fmt: skip
        large, small = effects[0].large, effects[0].small
        headers = ["norm", f"{large}/GPU", f"{small}/GPU", "change ± s.e.", "> 2 s.e.?"]
        out += [f"### {label} from {large} to {small} images per GPU", "",
                markdown_table(table, headers), ""]  # fmt: skip
    rows = schedule_rows(curves)
    if rows:
        table = [[r["norm"], r["images_per_gpu"],
                  *(f"{r[k]:.1f}" for k in ("early", "before_step", "late", "last_but_one",
                                            "end")),
                  f"{r['late'] - r['early']:+.1f}", f"{r['late'] - r['before_step']:+.1f}",
                  f"{r['end'] - r['last_but_one']:+.1f}"]
                 for r in rows]  # fmt: skip
        headers = ["norm", "images/GPU", "box AP at 3/5", "7/10", "4/5", "9/10", "end",
                   "3/5 -> 4/5", "7/10 -> 4/5", "9/10 -> end"]  # fmt: skip
        out += ["### Box AP along the schedule (mean over seeds)", "",
                "4/5 of the schedule is the first LR step of these configs: the gain from 3/5 "
                "and from 7/10 (the last evaluation before it) is what the base LR still "
                "added, near zero where that part of the curve flattened; 9/10 -> end is the "
                "last evaluation interval, after both steps.", "",
                markdown_table(table, headers), ""]  # fmt: skip
    if costs:
        table = [[c["gpus"], c["images_per_gpu"], c["runs"], f"{c['mean_minutes']:.1f}",
                  f"{c['min_minutes']:.1f}-{c['max_minutes']:.1f}"] for c in costs]  # fmt: skip
        total = sum(c["mean_minutes"] * c["runs"] for c in costs) / 60
        runs = sum(c["runs"] for c in costs)
        headers = ["processes", "images/process", "runs", "minutes a run (mean)", "range"]
        out += ["### Cost of a run (wall time: training, evaluations, precise BN)", "",
                markdown_table(table, headers), "",
                f"The {runs} finished runs took {total:.1f} hours."]  # fmt: skip
    return "\n".join(out)


def cost_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Per layout (processes, images per process), from the finished runs' DONE.json
    ``seconds``: runs, mean, min and max minutes, largest per-process batch first."""
    minutes: dict[tuple[int, int], list[float]] = {}
    for record in records:
        seconds = record.state.done.get("seconds") if record.finished else None
        if seconds is None or record.num_gpus is None:
            continue
        minutes.setdefault((record.num_gpus, record.key.ims_per_gpu), []).append(seconds / 60)
    return [
        {"gpus": gpus, "images_per_gpu": size, "runs": len(ms), "mean_minutes": sum(ms) / len(ms),
         "min_minutes": min(ms), "max_minutes": max(ms)}
        for (gpus, size), ms in sorted(minutes.items(), key=lambda kv: -kv[0][1])
    ]  # fmt: skip


def run_machine(record: RunRecord) -> dict[str, Any] | None:
    """The machine that trained a run, from its archived MACHINE.json
    (``frn_det_tools.run_archive``); None for a folder without one."""
    try:
        data = json.loads((record.folder / MACHINE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _machine_label(machine: Mapping[str, Any] | None) -> str:
    if machine is None:
        return "not recorded"
    return (f"{machine.get('cpu', '?')} ({machine.get('cpu_family_model_stepping', '?')}), "
            f"{machine.get('cores', '?')} cores, torch {machine.get('torch', '?')} "
            f"{machine.get('torch_cpu_capability', '?')}")  # fmt: skip


def machine_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Per machine the finished runs trained on it, as "norm ipg<N> seed<S>" labels: the
    same code, config and seed give other results on another machine, so a reader can see
    which runs a difference between machines could touch."""
    runs: dict[str, list[str]] = {}
    for record in records:
        if record.finished:
            runs.setdefault(_machine_label(run_machine(record)), []).append(record.key.label)
    return [{"machine": m, "runs": len(r), "which": r} for m, r in runs.items()]


def _point_rows(points: Sequence[Point]) -> list[dict[str, Any]]:
    rows = []
    for p in points:
        row: dict[str, Any] = {
            "norm": p.norm,
            "images_per_gpu": p.ims_per_gpu,
            "runs": len(p.runs),
            "finished": sum(r.finished for r in p.runs),
            "diverged": sum(r.state.diverged for r in p.runs),
        }
        for metric, label in (*METRICS, *RUNNING_METRICS):
            stats = p.stats(metric) or {}
            name = label.replace(" (running stats)", "_running").replace(" ", "_")
            for stat in ("mean", "std", "n"):
                row[f"{name}_{stat}"] = stats.get(stat)
        rows.append(row)
    return rows


def write_report(
    grid: str | os.PathLike,
    dest: str | os.PathLike,
    lr_search: str | os.PathLike | None = None,
    schedule_probe: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write summary.json (every run with its machine, the points, the machines, the search
    and its choice, the schedule probe's curves), summary.csv (the points),
    ap_vs_ims_per_gpu.png, curves.png and results.md into ``dest``.

    Raises:
        FileNotFoundError: naming ``grid`` when it holds no run folders, or
            ``schedule_probe`` when it holds no metrics (nothing written).
    """
    probe = probe_curves(schedule_probe) if schedule_probe is not None else {}
    records = collect_runs(grid)
    if not records:
        raise FileNotFoundError(
            f"no run folders (OUT/<config>/<norm>/ipg<N>/seed<S>/) under {os.fspath(grid)!r}"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    points = group_points(records)
    search = lr_search_rows(lr_search) if lr_search is not None else []
    chosen = chosen_learning_rates(search)
    curves = mean_curves(records)
    costs = cost_rows(records)
    names = ("summary.json", "summary.csv", "ap_vs_ims_per_gpu.png", "curves.png", "results.md")
    paths = {name: dest / name for name in names}
    rows = _point_rows(points)
    machines = machine_rows(records)
    data = {"runs": [{**r.to_json(), "machine": run_machine(r)} for r in records],
            "points": rows, "machines": machines,
            "lr_search": search, "chosen_base_lr": chosen, "cost": costs,
            "schedule_probe": {
                name: [{"iteration": i, "box_AP": b, "mask_AP": m} for i, b, m in curve]
                for name, curve in probe.items()}}  # fmt: skip
    paths["summary.json"].write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    with open(paths["summary.csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_ap_vs_ims_per_gpu(points, paths["ap_vs_ims_per_gpu.png"])
    plot_mean_curves(curves, paths["curves.png"])
    text = results_markdown(points, search, chosen, curves, costs)
    if machines:
        table = [[m["machine"], str(m["runs"]), ", ".join(m["which"])] for m in machines]
        text += ("\n\n### Machines (the same seed trains differently on another)\n\n"
                 + markdown_table(table, ["machine", "finished runs", "which"]))  # fmt: skip
    if probe:
        text += ("\n\n### Schedule probe: box AP at a constant LR (after warm-up)\n\n"
                 + probe_markdown(probe))  # fmt: skip
    paths["results.md"].write_text(text + "\n")
    return paths


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/batch_dependence.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", help="the fixed-batch sweep's --output folder")
    parser.add_argument("--lr-search", default=None,
                        help="folder holding the search's sweeps as lr<BASE_LR>/")  # fmt: skip
    parser.add_argument("--schedule-probe", default=None,
                        help="folder of train_net runs at a constant LR (one folder each), "
                        "tabulated to show where the curves flatten")  # fmt: skip
    parser.add_argument("--dest", required=True, help="where to write the report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report; exit status 2 with one line when ``grid`` has no runs."""
    args = argument_parser().parse_args(argv)
    try:
        paths = write_report(args.grid, args.dest, args.lr_search, args.schedule_probe)
    except FileNotFoundError as error:
        print(f"batch_dependence: {error}")
        return 2
    for path in paths.values():
        print(path)
    return 0
