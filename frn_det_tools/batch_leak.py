"""How much an image's FPN features change when it is batched with a larger image.

detectron2 pads a batch to one canvas; every statistic and every conv border that sees the
padding makes an image's features depend on the batch. This measures it directly: image A
alone, then A batched with a larger image B, and the relative L2 change of A's features
over A's valid region at each FPN level, for each norm with and without
MODEL.PADDING_AWARE_NORM. ``tools/batch_leak.py`` prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model

from frn_det.checkpoint import SafeCheckpointer
from frn_det.config import add_frn_config
from frn_det.engine.validation import check_config_options
from frn_det.layers.padding import padding_scope
from frn_det_tools.markdown import markdown_table

__all__ = ["Row", "feature_change", "main", "measure"]

DEFAULT_ROWS = ("frn", "frn:pa", "gn", "gn:pa", "bn", "bn:pa")
LABELS = {"frn": "FRN", "gn": "GN", "bn": "BN, eval (frozen statistics)", "syncbn": "SyncBN, eval"}


@dataclass(frozen=True)
class Row:
    """One model to measure: its norm's config name, padding-aware or not, weights."""

    norm: str
    padding_aware: bool
    weights: str = ""

    @property
    def label(self) -> str:
        name = LABELS.get(self.norm, self.norm)
        return f"{name}, padding-aware" if self.padding_aware else name


def _cfg(template: str, row: Row, opts: Sequence[str]) -> CfgNode:
    cfg = add_frn_config(get_cfg())
    cfg.merge_from_file(template.format(norm=row.norm))
    cfg.merge_from_list(list(opts))
    cfg.MODEL.PADDING_AWARE_NORM = row.padding_aware
    cfg.MODEL.WEIGHTS = row.weights
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _features(model: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad(), padding_scope():
        batch = model.preprocess_image([{"image": image} for image in images])
        return model.backbone(batch.tensor)


def feature_change(
    model: torch.nn.Module, image_a: torch.Tensor, image_b: torch.Tensor
) -> dict[str, float]:
    """Relative L2 change of A's features over its valid region, alone vs batched with B.

    Args:
        model: a detectron2 meta-architecture with ``preprocess_image`` and ``backbone``,
            in the mode to measure (eval for BN: running statistics).
        image_a, image_b: (3, H, W) images as the model's inputs ("image"); the batch's
            canvas covers both, so A is padded where B is larger.
    Returns:
        FPN level -> ||f_batched - f_alone|| / ||f_alone|| over A's valid pixels there.
    """
    alone = _features(model, [image_a])
    batched = _features(model, [image_a, image_b])
    canvas = model.preprocess_image([{"image": image_a}]).tensor.shape[-2:]
    h, w = image_a.shape[-2:]
    change = {}
    for level, x in alone.items():
        # the level's stride s: ceil(canvas / s) is its size (strided convs round up)
        stride = next(2**k for k in range(13) if math.ceil(canvas[0] / 2**k) == x.shape[-2])
        vh, vw = math.ceil(h / stride), math.ceil(w / stride)
        a = x[0, :, :vh, :vw]
        b = batched[level][0, :, :vh, :vw]
        change[level] = float((b - a).norm() / a.norm())
    return change


def _dataset_pair(dataset: str, cfg: CfgNode) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset's first landscape image as A and first portrait one as B, test-resized.

    At test size every image has the same short side, so a batch's padding comes from
    images of other orientations: A is padded below, as in a batch of mixed images.
    """
    records = DatasetCatalog.get(dataset)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)

    def load(record: dict) -> torch.Tensor:
        image = read_image(record["file_name"], format=cfg.INPUT.FORMAT)
        image = resize.get_transform(image).apply_image(image)
        return torch.as_tensor(image.transpose(2, 0, 1).copy()).float()

    a = next((r for r in records if r["width"] > r["height"]), None)
    b = next((r for r in records if r["height"] > r["width"]), None)
    if a is None or b is None:
        raise ValueError(
            f"{dataset}: needs a landscape and a portrait image to batch together; "
            "pass --sizes HA WA HB WB instead"
        )
    return load(a), load(b)


def _random_pair(sizes: Sequence[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ha, wa, hb, wb = sizes
    return (
        torch.rand(3, ha, wa, generator=gen) * 255,
        torch.rand(3, hb, wb, generator=gen) * 255,
    )


def measure(
    rows: Sequence[Row],
    template: str,
    image_a: torch.Tensor,
    image_b: torch.Tensor,
    seed: int = 0,
    opts: Sequence[str] = (),
) -> list[dict[str, object]]:
    """``feature_change`` for each row's model, built with ``seed`` (eval mode)."""
    results = []
    for row in rows:
        cfg = _cfg(template, row, opts)
        torch.manual_seed(seed)
        model = build_model(cfg)
        if row.weights:
            SafeCheckpointer(model).load(row.weights)
        model.eval()
        change = feature_change(model, image_a, image_b)
        results.append(
            {
                "norm": row.norm,
                "padding_aware": row.padding_aware,
                "weights": row.weights or "init",
                "change": change,
            }
        )
    return results


def parse_row(text: str, weights: dict[str, str]) -> Row:
    """"frn" or "frn:pa" (padding-aware); weights from ``--weights frn=PATH``."""
    norm, _, flag = text.partition(":")
    if flag not in ("", "pa") or not norm:
        raise argparse.ArgumentTypeError(
            f"--rows: {text!r} is not NORM or NORM:pa (e.g. frn, frn:pa, gn, bn)"
        )
    return Row(norm, flag == "pa", weights.get(norm, ""))


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Relative change of an image's FPN features, alone vs batched with a "
        "larger image, per norm, with and without MODEL.PADDING_AWARE_NORM (eval mode).",
    )
    parser.add_argument(
        "--config-template",
        default="configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml",
        help="config file with {norm} for the norm's name (default: %(default)s)",
    )
    parser.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help="comma-separated NORM or NORM:pa (padding-aware) (default: %(default)s)",
    )
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="NORM=PATH",
        help="a checkpoint for NORM's rows (both forms load it); default: seeded init",
    )
    parser.add_argument(
        "--dataset",
        default="frn_shapes_val",
        help="take A (first landscape) and B (first portrait) from this dataset "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=4,
        metavar=("HA", "WA", "HB", "WB"),
        help="random images of these sizes instead of the dataset's",
    )
    parser.add_argument("--seed", type=int, default=0, help="weights' seed (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config options")
    return parser


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    """Run ``tools/batch_leak.py``; bad flags exit with status 2 before any model is built."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    weights = {}
    for item in args.weights:
        norm, sep, path = item.partition("=")
        if not sep or not path:
            parser.error(f"--weights {item!r} is not NORM=PATH")
        if not Path(path).is_file():
            parser.error(f"--weights {item}: {path} is not a file")
        weights[norm] = path
    try:
        rows = [parse_row(text, weights) for text in args.rows.split(",") if text]
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if not rows:
        parser.error("--rows names no row; e.g. frn,frn:pa,gn")
    check_config_options(args.opts, error=parser.error)
    for row in rows:
        if not Path(args.config_template.format(norm=row.norm)).is_file():
            parser.error(
                f"--rows {row.norm}: config {args.config_template.format(norm=row.norm)} "
                "(--config-template) does not exist"
            )
    if args.json is not None and not args.json.resolve().parent.is_dir():
        parser.error(f"--json {args.json}: folder {args.json.resolve().parent} does not exist")
    if args.sizes:
        image_a, image_b = _random_pair(args.sizes, args.seed)
        ha, wa, hb, wb = args.sizes
        source = f"random images {ha}x{wa} and {hb}x{wb}"
    else:
        probe = _cfg(args.config_template, rows[0], args.opts)
        image_a, image_b = _dataset_pair(args.dataset, probe)
        source = (
            f"{args.dataset}: A {image_a.shape[-2]}x{image_a.shape[-1]}, "
            f"B {image_b.shape[-2]}x{image_b.shape[-1]}"
        )
    results = measure(rows, args.config_template, image_a, image_b, args.seed, args.opts)
    levels = list(results[0]["change"])
    table = [
        [Row(r["norm"], r["padding_aware"]).label, r["weights"]]
        + [f"{100 * r['change'][level]:.3g}%" for level in levels]
        for r in results
    ]
    print(f"Change of A's features when batched with B ({source}; eval mode, seed {args.seed})")
    print(markdown_table(table, ["norm", "weights", *levels]))
    if args.json:
        payload = {"source": source, "seed": args.seed, "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return results
