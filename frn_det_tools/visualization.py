"""Predictions drawn with detectron2's Visualizer: per image (the ground truth beside the
prediction) and as a contact sheet that puts several checkpoints side by side.

A checkpoint is a run folder that ``tools/train_net.py`` (or a sweep) wrote, holding
``config.yaml`` and ``model_final.pth`` (or the checkpoint ``last_checkpoint`` names), or a
weights file with a config. Images come from a registered dataset (its annotations are
drawn as the ground truth) or from a folder (predictions only).

Each class has one colour in every panel, ground truth and predictions alike, so a
misclassified object shows up as a change of colour as well as of label.
"""

from __future__ import annotations

import argparse
import os
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog, detection_utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, Instances
from detectron2.utils.visualizer import Visualizer
from matplotlib.figure import Figure
from PIL import Image

from frn_det.checkpoint import CheckpointError, SafeCheckpointer
from frn_det.engine import (
    Trainer,
    build_config,
    deterministic_inference,
    exit_on_bad_input,
)
from frn_det.engine import argument_parser as train_net_argument_parser
from frn_det_tools.run_folders import CONFIG_FILE, FINAL_MODEL, LAST_CHECKPOINT, run_key
from frn_det_tools.sweep import read_state

__all__ = [
    "Checkpoint",
    "Predictor",
    "Sample",
    "VisualizeError",
    "argument_parser",
    "checkpoint_config",
    "checkpoint_from_run",
    "class_colors",
    "contact_sheet",
    "dataset_samples",
    "draw_ground_truth",
    "draw_predictions",
    "folder_samples",
    "main",
    "side_by_side",
    "visualize",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
WEIGHT_SUFFIXES = (".pth", ".pkl")
# Drawing a few images needs no compiled FRN kernels: the eager path gives the same numbers
# (tested in tests/layers) without torch.compile's start-up. A user's --opts still win.
DEFAULT_OPTS = ("MODEL.FRN.IMPL", "autograd")
# White, like the page the sheet is shown on; the gaps between panels.
PAPER = 255
GAP = 6
FONT_PT = 8
DPI = 100
LINE_PX = 14  # one line of FONT_PT text at DPI, with leading
CHAR_PX = 7  # about the widest average character (bold), to wrap labels to their column


class VisualizeError(ValueError):
    """A run folder, weights file, dataset or image folder that cannot be drawn from."""


@dataclass(frozen=True)
class Checkpoint:
    """A model to draw: its config file, its weights and the label of its panels."""

    config_file: Path
    weights: Path
    label: str


@dataclass(frozen=True)
class Sample:
    """One image to draw on: its file and, for a dataset image, its detectron2 record
    (with "annotations", the ground truth), else None."""

    file_name: str
    record: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """The image's file name, without folders."""
        return Path(self.file_name).name


def _run_label(folder: Path) -> str:
    # A sweep's run folder is .../<norm>/ipg<N>/seed<S>: those three say which run it is.
    key = run_key(folder)
    return key.label if key is not None else folder.name


def _results_line(folder: Path) -> str:
    results = read_state(folder).results
    shown = []
    for key, name in (("bbox/AP", "box AP"), ("segm/AP", "mask AP")):
        # float(): metrics.json holds a NaN AP (nothing predicted) as the string "NaN".
        value = float(results.get(key, "nan"))
        if np.isfinite(value):
            shown.append(f"{name} {value:.1f}")
    return " / ".join(shown)


def checkpoint_from_run(folder: str | os.PathLike, label: str | None = None) -> Checkpoint:
    """The checkpoint of a train_net output folder: its ``config.yaml`` and
    ``model_final.pth``, else the checkpoint named in ``last_checkpoint``.

    The label is ``label`` or the folder's name (``<norm> ipg<N> seed<S>`` for a sweep's
    run folder) with, when its metrics.json holds the final evaluation, its box and mask AP.

    Raises:
        VisualizeError: naming the folder and the file it lacks.
    """
    folder = Path(folder)
    config = folder / CONFIG_FILE
    if not config.is_file():
        raise VisualizeError(
            f"{os.fspath(folder)!r} is not a train_net output folder: it has no {CONFIG_FILE}"
        )
    weights = folder / FINAL_MODEL
    if not weights.is_file():
        last = folder / LAST_CHECKPOINT
        name = last.read_text(encoding="utf-8").strip() if last.is_file() else ""
        weights = folder / name
        if not name or not weights.is_file():
            raise VisualizeError(
                f"{os.fspath(folder)!r} holds no {FINAL_MODEL} and no checkpoint named by "
                f"{LAST_CHECKPOINT}: the run has not saved a model yet"
            )
    results = _results_line(folder)
    label = (label or _run_label(folder)) + (f"\n{results}" if results else "")
    return Checkpoint(config, weights, label)


def checkpoint_config(checkpoint: Checkpoint, opts: Sequence[str] = ()) -> CfgNode:
    """The config of ``checkpoint`` with ``opts`` (KEY VALUE), built as train_net builds it
    (``frn_det.engine.build_config``: FRN keys, CPU fallback), FRN kernels eager unless
    ``opts`` say otherwise."""
    argv = ["--config-file", os.fspath(checkpoint.config_file), *DEFAULT_OPTS, *opts]
    return build_config(train_net_argument_parser().parse_args(argv))


class Predictor:
    """A detectron2 model in eval mode with its test-time resize (``INPUT.MIN_SIZE_TEST``,
    ``INPUT.MAX_SIZE_TEST``), like detectron2's ``DefaultPredictor``, but built and loaded
    the way ``tools/train_net.py --eval-only`` builds and loads it."""

    def __init__(self, cfg: CfgNode, model: torch.nn.Module) -> None:
        self.cfg = cfg
        self.model = model.eval()
        self.resize = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, opts: Sequence[str] = ()) -> Predictor:
        """The model of ``checkpoint_config(checkpoint, opts)`` with the checkpoint's
        weights, loaded strictly as train_net's ``--eval-only`` loads them: a checkpoint
        that lacks a tensor of the model, or holds one of another shape, is refused rather
        than drawn with random weights in its place.

        Raises:
            frn_det.checkpoint.CheckpointError: naming the file and what does not fit.
        """
        cfg = checkpoint_config(checkpoint, opts)
        model = Trainer.build_model(cfg)
        SafeCheckpointer(model).resume_or_load(
            os.fspath(checkpoint.weights), resume=False, strict=True
        )
        return cls(cfg, model)

    def __call__(self, image: np.ndarray) -> Instances:
        """Predict on one (H, W, 3) uint8 image in ``INPUT.FORMAT`` channel order; returns
        the Instances (boxes, classes, scores, masks) on the CPU in the image's own
        coordinates."""
        height, width = image.shape[:2]
        resized = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        inputs = {"image": tensor, "height": height, "width": width}
        with torch.no_grad(), deterministic_inference():
            return self.model([inputs])[0]["instances"].to("cpu")


def dataset_samples(dataset: str, num_images: int) -> list[Sample]:
    """The first ``num_images`` images (all of them when <= 0) of a registered dataset,
    each with its record.

    Raises:
        VisualizeError: for a name that is not registered, listing the registered ones.
    """
    if dataset not in DatasetCatalog:
        raise VisualizeError(
            f"dataset {dataset!r} is not registered; registered: {', '.join(DatasetCatalog)}"
        )
    records = DatasetCatalog.get(dataset)
    records = records[:num_images] if num_images > 0 else records
    return [Sample(r["file_name"], r) for r in records]


def folder_samples(folder: str | os.PathLike, num_images: int) -> list[Sample]:
    """The first ``num_images`` images (all when <= 0) of ``folder`` in name order, without
    ground truth.

    Raises:
        VisualizeError: when the folder holds no image (naming the suffixes looked for).
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise VisualizeError(
            f"image folder {os.fspath(folder)!r} holds no {'/'.join(IMAGE_SUFFIXES)} file"
        )
    files = files[:num_images] if num_images > 0 else files
    return [Sample(os.fspath(p)) for p in files]


def class_colors(num_classes: int) -> list[tuple[float, float, float]]:
    """One RGB colour (0-1) per class, matplotlib's tab10 then tab20 cycled."""
    from matplotlib import colormaps

    palette = [colormaps["tab10"](i)[:3] for i in range(10)]
    palette += [colormaps["tab20"](i)[:3] for i in range(1, 20, 2)]
    return [palette[i % len(palette)] for i in range(num_classes)]


def _class_name(class_names: Sequence[str], index: int) -> str:
    return class_names[index] if 0 <= index < len(class_names) else f"class {index}"


def draw_predictions(
    image_rgb: np.ndarray,
    instances: Instances,
    class_names: Sequence[str],
    score_threshold: float = 0.5,
    scale: float = 1.0,
) -> np.ndarray:
    """Boxes, masks and "class score%" labels of the predictions scoring at least
    ``score_threshold``, drawn on an (H, W, 3) uint8 RGB image.

    Returns:
        The drawing, (round(H * scale), round(W * scale), 3) uint8 RGB.
    """
    instances = instances.to("cpu")
    if instances.has("scores"):
        instances = instances[instances.scores >= score_threshold]
    classes = instances.pred_classes.tolist() if instances.has("pred_classes") else []
    scores = instances.scores.tolist() if instances.has("scores") else [None] * len(classes)
    labels = [
        _class_name(class_names, c) + ("" if s is None else f" {s:.0%}")
        for c, s in zip(classes, scores, strict=True)
    ]
    boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else None
    masks = list(instances.pred_masks.numpy()) if instances.has("pred_masks") else None
    return _overlay(image_rgb, classes, labels, boxes, masks, len(class_names), scale)


def draw_ground_truth(
    image_rgb: np.ndarray,
    record: dict[str, Any],
    class_names: Sequence[str],
    scale: float = 1.0,
) -> np.ndarray:
    """The annotations of a detectron2 dataset record (boxes, polygon or RLE masks, class
    names) drawn on its (H, W, 3) uint8 RGB image, in the colours ``draw_predictions``
    gives the same classes.

    Returns:
        The drawing, (round(H * scale), round(W * scale), 3) uint8 RGB.
    """
    annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
    classes = [a["category_id"] for a in annotations]
    labels = [_class_name(class_names, c) for c in classes]
    boxes = np.array(
        [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations]
    ).reshape(-1, 4)
    masks = (
        [a["segmentation"] for a in annotations]
        if all("segmentation" in a for a in annotations)
        else None
    )
    return _overlay(image_rgb, classes, labels, boxes, masks or None, len(class_names), scale)


def _overlay(
    image_rgb: np.ndarray,
    classes: Sequence[int],
    labels: Sequence[str],
    boxes: np.ndarray | None,
    masks: list[Any] | None,
    num_classes: int,
    scale: float,
) -> np.ndarray:
    visualizer = Visualizer(image_rgb, metadata=None, scale=scale)
    if classes:
        colors = class_colors(max(num_classes, max(classes) + 1))
        visualizer.overlay_instances(
            boxes=boxes,
            masks=masks,
            labels=list(labels),
            assigned_colors=[colors[c] for c in classes],
            alpha=0.45,
        )
    return visualizer.get_output().get_image()


def side_by_side(images: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """(H_i, W_i, 3) uint8 images left to right, top-aligned, ``gap`` white columns
    between them: (max H_i, sum W_i + gap * (n - 1), 3)."""
    height = max(image.shape[0] for image in images)
    width = sum(image.shape[1] for image in images) + gap * (len(images) - 1)
    canvas = np.full((height, width, 3), PAPER, dtype=np.uint8)
    x = 0
    for image in images:
        canvas[: image.shape[0], x : x + image.shape[1]] = image
        x += image.shape[1] + gap
    return canvas


def _wrap(label: str, width_px: int) -> list[str]:
    chars = max(8, width_px // CHAR_PX)
    lines: list[str] = []
    for part in label.splitlines() or [""]:
        lines += textwrap.wrap(part, chars) or [""]
    return lines


def contact_sheet(
    cells: Sequence[Sequence[np.ndarray | None]],
    path: str | os.PathLike,
    *,
    column_labels: Sequence[str],
    row_labels: Sequence[str],
    notes: Sequence[Sequence[str]] | None = None,
    title: str = "",
) -> tuple[int, int]:
    """A grid of drawings saved as one PNG, every image at its own resolution (one image
    pixel, one sheet pixel): ``cells[row][column]`` (None leaves a cell empty), a header
    over each column, a caption over each row and, with ``notes``, the one-line
    ``notes[row][column]`` under each cell.

    Returns:
        The (width, height) of the PNG in pixels.
    """
    rows, columns = len(cells), len(column_labels)
    if len(row_labels) != rows or any(len(row) != columns for row in cells):
        raise ValueError(
            f"contact_sheet takes {len(row_labels)} row labels and {columns} column labels "
            f"for a grid of {rows} rows of {[len(row) for row in cells]} cells"
        )
    widths = [
        max((row[c].shape[1] for row in cells if row[c] is not None), default=0)
        for c in range(columns)
    ]
    heights = [max((cell.shape[0] for cell in row if cell is not None), default=0) for row in cells]
    note_px = LINE_PX if notes is not None else 0
    width = GAP + sum(w + GAP for w in widths)
    header = [_wrap(label, w) for label, w in zip(column_labels, widths, strict=True)]
    captions = [_wrap(label, width - 2 * GAP) for label in row_labels]
    title_lines = _wrap(title, width - 2 * GAP) if title else []
    header_px = LINE_PX * max((len(h) for h in header), default=0)
    top = GAP + LINE_PX * len(title_lines) + header_px
    height = top + sum(
        LINE_PX * len(c) + h + note_px + GAP for c, h in zip(captions, heights, strict=True)
    )
    height += GAP

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")

    def text(x: float, y: float, lines: Sequence[str], **kwargs: Any) -> None:
        # Positions in pixels from the top left.
        fig.text(x / width, 1 - y / height, "\n".join(lines), va="top", fontsize=FONT_PT,
                 linespacing=1.2, **kwargs)  # fmt: skip

    if title_lines:
        text(GAP, GAP, title_lines, fontweight="bold")
    x = GAP
    for lines, w in zip(header, widths, strict=True):
        text(x, top - header_px, lines)
        x += w + GAP
    y = top
    for r, (row, lines, h) in enumerate(zip(cells, captions, heights, strict=True)):
        text(GAP, y, lines, color="0.3")
        y += LINE_PX * len(lines)
        x = GAP
        for c, (cell, w) in enumerate(zip(row, widths, strict=True)):
            if cell is not None:
                ch, cw = cell.shape[:2]
                ax = fig.add_axes((x / width, 1 - (y + ch) / height, cw / width, ch / height))
                ax.imshow(cell, interpolation="nearest", aspect="auto")
                ax.set_axis_off()
                if notes is not None and notes[r][c]:
                    text(x, y + ch + 1, [notes[r][c]], color="0.3")
            x += w + GAP
        y += h + note_px + GAP
    fig.savefig(path, dpi=DPI, facecolor="white")
    return width, height


def _prediction_note(instances: Instances, score_threshold: float) -> str:
    # What a panel leaves out: a weak model's best guesses may all score below the threshold.
    if not instances.has("scores") or not len(instances):
        return "no predictions"
    scores = instances.scores
    shown = int((scores >= score_threshold).sum())
    return f"{shown} of {len(scores)} drawn, top score {float(scores.max()):.2f}"


def _truth_note(record: dict[str, Any] | None) -> str:
    count = sum(not a.get("iscrowd", 0) for a in (record or {}).get("annotations", []))
    return f"{count} object{'s' if count != 1 else ''}"


def _slug(label: str) -> str:
    first = label.splitlines()[0] if label.strip() else "checkpoint"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", first).strip("_.") or "checkpoint"


def _class_names(dataset: str | None) -> list[str]:
    if dataset and dataset in MetadataCatalog:
        return list(MetadataCatalog.get(dataset).get("thing_classes", []))
    return []


def visualize(
    checkpoints: Sequence[Checkpoint],
    output: str | os.PathLike,
    *,
    dataset: str | None = None,
    images: str | os.PathLike | None = None,
    num_images: int = 6,
    score_threshold: float = 0.5,
    scale: float = 1.0,
    transpose: bool = False,
    per_image: bool = True,
    opts: Sequence[str] = (),
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Draw every checkpoint's predictions on the same images into ``output``:

    - ``sheet.png``: one row per image, one column for the ground truth (dataset images)
      and one per checkpoint, side by side (``transpose``: one row per checkpoint, one
      column per image);
    - with ``per_image``, ``<checkpoint label>/<image>.png`` for every image: the ground
      truth beside the prediction (the prediction alone for folder images).

    Args:
        checkpoints: the models, in column order.
        dataset: a registered dataset (default: the first checkpoint's first
            DATASETS.TEST); ignored when ``images`` is given.
        images: a folder of images to predict on instead of a dataset.
        num_images: how many images (the first ones; all when <= 0).
        score_threshold: predictions scoring less are not drawn.
        scale: drawings are ``scale`` times the images' size.
        opts: KEY VALUE config options for every checkpoint.
    Returns:
        {"sheet": path, "images": [paths of the per-image PNGs], "size": (width, height),
        "notes": the line under each panel of the sheet, [row][column]}.
    Raises:
        VisualizeError: naming the dataset or folder that cannot be drawn from.
    """
    if not checkpoints:
        raise VisualizeError("no checkpoint given: name a run folder or a weights file")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if dataset is None:
        test_sets = checkpoint_config(checkpoints[0], opts).DATASETS.TEST
        dataset = test_sets[0] if test_sets else None
    if images is not None:
        samples = folder_samples(images, num_images)
        class_names = _class_names(dataset)
    elif dataset is None:
        raise VisualizeError(
            "no dataset to draw from: the config has no DATASETS.TEST; give --dataset NAME "
            "or --images FOLDER"
        )
    else:
        samples = dataset_samples(dataset, num_images)
        class_names = _class_names(dataset)
    with_truth = images is None
    rgb = [detection_utils.read_image(s.file_name, format="RGB") for s in samples]
    truth = [
        draw_ground_truth(image, s.record or {}, class_names, scale) if with_truth else None
        for image, s in zip(rgb, samples, strict=True)
    ]

    slugs: list[str] = []
    drawn: list[list[np.ndarray]] = []
    drawn_notes: list[list[str]] = []
    written: list[Path] = []
    for index, checkpoint in enumerate(checkpoints):
        # One model in memory at a time.
        predictor = Predictor.from_checkpoint(checkpoint, opts)
        slug = _slug(checkpoint.label)
        slug = slug if slug not in slugs else f"{slug}_{index}"
        slugs.append(slug)
        column, column_notes = [], []
        for image, sample, gt in zip(rgb, samples, truth, strict=True):
            if predictor.input_format == "RGB":
                model_input = image
            else:
                model_input = detection_utils.read_image(sample.file_name, predictor.input_format)
            instances = predictor(model_input)
            picture = draw_predictions(image, instances, class_names, score_threshold, scale)
            column.append(picture)
            column_notes.append(_prediction_note(instances, score_threshold))
            if per_image:
                folder = output / slug
                folder.mkdir(exist_ok=True)
                path = folder / f"{Path(sample.name).stem}.png"
                Image.fromarray(side_by_side([gt, picture]) if gt is not None else picture).save(
                    path
                )
                written.append(path)
        drawn.append(column)
        drawn_notes.append(column_notes)

    labels = [c.label for c in checkpoints]
    sources = (["ground truth"] if with_truth else []) + labels
    grid = [([gt] if with_truth else []) + [col[i] for col in drawn] for i, gt in enumerate(truth)]
    notes = [
        ([_truth_note(s.record)] if with_truth else []) + [col[i] for col in drawn_notes]
        for i, s in enumerate(samples)
    ]
    names = [s.name for s in samples]
    if transpose:
        grid = [list(row) for row in zip(*grid, strict=True)]
        notes = [list(row) for row in zip(*notes, strict=True)]
        column_labels, row_labels = names, sources
    else:
        column_labels, row_labels = sources, names
    where = dataset if with_truth else os.fspath(images)
    title = f"{where}: predictions scoring >= {score_threshold:g}"
    sheet = output / "sheet.png"
    size = contact_sheet(
        grid, sheet, column_labels=column_labels, row_labels=row_labels, notes=notes, title=title
    )
    echo(f"wrote {len(written)} per-image drawing(s) under {output}")
    echo(f"wrote {sheet} ({size[0]}x{size[1]} px)")
    return {"sheet": sheet, "images": written, "size": size, "notes": notes}


def _checkpoints(
    items: Sequence[str], config_file: str | None, labels: Sequence[str] | None
) -> list[Checkpoint]:
    if labels is not None and len(labels) != len(items):
        raise VisualizeError(
            f"--labels gives {len(labels)} label(s) for {len(items)} checkpoint(s): {list(labels)}"
        )
    found = []
    for index, item in enumerate(items):
        label = labels[index] if labels is not None else None
        path = Path(item)
        if path.is_dir():
            found.append(checkpoint_from_run(path, label))
            continue
        if path.suffix not in WEIGHT_SUFFIXES or not path.is_file():
            raise VisualizeError(
                f"{item!r} is neither a run folder nor a {'/'.join(WEIGHT_SUFFIXES)} weights file"
            )
        config = Path(config_file) if config_file else path.parent / CONFIG_FILE
        if not config.is_file():
            raise VisualizeError(
                f"no config for weights {item!r}: give --config-file (there is no "
                f"{os.fspath(path.parent / CONFIG_FILE)})"
            )
        found.append(Checkpoint(config, path, label or path.parent.name or path.stem))
    return found


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/visualize.py``."""
    parser = argparse.ArgumentParser(
        prog="visualize.py",
        description=(
            "Draw the predictions (boxes, masks, class, score) of one or more checkpoints on "
            "the images of a registered dataset, beside its ground truth, or on a folder of "
            "images: a PNG per image and checkpoint, and sheet.png with the checkpoints side "
            "by side."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "checkpoints",
        nargs="+",
        metavar="RUN_OR_WEIGHTS",
        help="train_net output folders (config.yaml + model_final.pth) or weights files "
        "(with --config-file, or a config.yaml beside them)",
    )
    parser.add_argument("--config-file", default=None, help="the config of weights files")
    parser.add_argument(
        "--labels",
        default=None,
        type=lambda text: [t.strip() for t in text.split(",")],
        help="comma-separated labels, one per checkpoint (default: folder name and AP)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", default=None, help="registered dataset (default: the config's DATASETS.TEST)"
    )
    source.add_argument("--images", default=None, help="a folder of images instead of a dataset")
    parser.add_argument(
        "--num-images", type=int, default=6, help="the first N images; 0 for all of them"
    )
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--scale", type=float, default=1.0, help="drawing size / image size")
    parser.add_argument(
        "--transpose",
        action="store_true",
        help="sheet with a row per checkpoint and a column per image (default: the reverse)",
    )
    parser.add_argument("--no-per-image", action="store_true", help="write only sheet.png")
    parser.add_argument(
        "--output",
        default=None,
        help="where to write (default: RUN/predictions for one run folder, else output/visualize)",
    )
    parser.add_argument(
        "--opts", nargs="+", default=[], metavar="KEY VALUE", help="config options for every model"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tools/visualize.py`` with ``argv``; returns the exit status."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"--opts takes KEY VALUE pairs, got an odd number: {args.opts}")
    try:
        with exit_on_bad_input(parser.prog):
            checkpoints = _checkpoints(args.checkpoints, args.config_file, args.labels)
            output = args.output
            if output is None:
                single = len(args.checkpoints) == 1 and Path(args.checkpoints[0]).is_dir()
                output = Path(args.checkpoints[0]) / "predictions" if single else "output/visualize"
            visualize(
                checkpoints,
                output,
                dataset=args.dataset,
                images=args.images,
                num_images=args.num_images,
                score_threshold=args.score_threshold,
                scale=args.scale,
                transpose=args.transpose,
                per_image=not args.no_per_image,
                opts=args.opts,
            )
    except (VisualizeError, CheckpointError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 0
