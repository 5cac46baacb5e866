"""tools/visualize.py and frn_det_tools.visualization: predictions and ground truth drawn where the
objects are, per-image PNGs and contact sheets of the expected size, FRN statistics as
training scalars."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import PeriodicWriter, SimpleTrainer
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import JSONWriter
from PIL import Image
from pycocotools import mask as mask_util

from frn_det.data import SHAPES_CLASSES, register_shapes_datasets
from frn_det.data.shapes import generate_shapes_dataset
from frn_det.engine import Trainer, argument_parser, build_config
from frn_det.engine.hooks import FRNStatsHook, frn_parameter_stats
from frn_det.layers import TLU, FilterResponseNorm1d, FilterResponseNorm2d, set_frn_impl
from frn_det_tools.visualization import (
    GAP,
    checkpoint_from_run,
    draw_ground_truth,
    draw_predictions,
    main,
    visualize,
)

REPO = Path(__file__).resolve().parents[2]
SHAPES_CONFIG = REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_frn.yaml"
# A small FRN Mask R-CNN (random weights) and every detection kept, so a prediction panel
# has something drawn on it.
TINY_OPTS = [
    "MODEL.FRN.IMPL", "autograd",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "128",
    "SOLVER.MAX_ITER", "4",
]  # fmt: skip


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory):
    """A shapes dataset of 2 train and 3 val images, registered as frn_shapes_train/val."""
    root = tmp_path_factory.mktemp("datasets")
    generate_shapes_dataset(root, num_train=2, num_val=3, seed=0)
    register_shapes_datasets(root)
    yield root
    register_shapes_datasets()


@pytest.fixture(scope="module")
def val_records(shapes_root):
    return DatasetCatalog.get("frn_shapes_val")


def _object_masks(record):
    # (union of the objects' masks, union of their boxes grown by 2 px for the outline)
    height, width = record["height"], record["width"]
    inside = np.zeros((height, width), bool)
    boxed = np.zeros((height, width), bool)
    for annotation in record["annotations"]:
        rles = mask_util.frPyObjects(annotation["segmentation"], height, width)
        inside |= mask_util.decode(mask_util.merge(rles)).astype(bool)
        x, y, w, h = (int(round(v)) for v in annotation["bbox"])
        boxed[max(0, y - 2) : y + h + 3, max(0, x - 2) : x + w + 3] = True
    return inside, boxed


def _changed(drawn, image):
    return np.abs(drawn.astype(int) - image.astype(int)).sum(-1) > 30


def test_the_ground_truth_is_drawn_over_every_object_and_nowhere_else(val_records):
    for record in val_records:
        image = read_image(record["file_name"], format="RGB")
        drawn = draw_ground_truth(image, record, SHAPES_CLASSES)
        assert drawn.shape == image.shape and drawn.dtype == np.uint8
        inside, boxed = _object_masks(record)
        changed = _changed(drawn, image)
        assert changed[inside].mean() > 0.95
        # Outside the boxes only the class labels are drawn.
        assert changed[~boxed].mean() < 0.03


def _as_predictions(record, scores):
    # The ground truth of a record as the Instances a model would return.
    height, width = record["height"], record["width"]
    annotations = record["annotations"]
    masks = [
        mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], height, width)))
        for a in annotations
    ]
    instances = Instances((height, width))
    x, y, w, h = np.array([a["bbox"] for a in annotations], dtype=np.float32).T
    instances.pred_boxes = Boxes(torch.as_tensor(np.stack([x, y, x + w, y + h], 1)))
    instances.pred_classes = torch.tensor([a["category_id"] for a in annotations])
    instances.scores = torch.tensor(scores, dtype=torch.float32)
    instances.pred_masks = torch.as_tensor(np.stack(masks).astype(bool))
    return instances, masks


def test_predictions_below_the_score_threshold_are_not_drawn_and_scale_sizes_the_drawing(
    val_records,
):
    record = max(val_records, key=lambda r: len(r["annotations"]))
    assert len(record["annotations"]) >= 2
    image = read_image(record["file_name"], format="RGB")
    scores = [0.9] + [0.2] * (len(record["annotations"]) - 1)
    instances, masks = _as_predictions(record, scores)
    drawn = draw_predictions(image, instances, SHAPES_CLASSES, score_threshold=0.5)
    assert drawn.shape == image.shape
    changed = _changed(drawn, image)
    kept = masks[0].astype(bool)
    dropped = np.any([m.astype(bool) for m in masks[1:]], axis=0) & ~kept
    assert changed[kept].mean() > 0.95
    # Apart from the kept object's label, which may fall on a neighbour.
    assert changed[dropped].mean() < 0.1

    big = draw_predictions(image, instances, SHAPES_CLASSES, score_threshold=0.0, scale=2.0)
    assert big.shape == (2 * image.shape[0], 2 * image.shape[1], 3)


@pytest.fixture(scope="module")
def run_folder(shapes_root, tmp_path_factory):
    """A train_net-like output folder: config.yaml, model_final.pth (random weights of the
    tiny model) and a metrics.json whose last line is the final evaluation."""
    folder = tmp_path_factory.mktemp("run") / "tiny_frn"
    folder.mkdir()
    args = argument_parser().parse_args(["--config-file", str(SHAPES_CONFIG), *TINY_OPTS])
    cfg = build_config(args)
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    set_frn_impl(None)
    torch.save({"model": model.state_dict(), "iteration": 3}, folder / "model_final.pth")
    (folder / "config.yaml").write_text(cfg.dump())
    lines = [
        {"iteration": 3, "total_loss": 2.5},
        {"iteration": 3, "bbox/AP": 12.5, "segm/AP": 11.0},
    ]
    (folder / "metrics.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def _png(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_a_run_folder_gives_a_png_per_image_with_the_ground_truth_beside_the_prediction(
    run_folder, val_records, tmp_path, capsys
):
    out = tmp_path / "vis"
    assert (
        main([str(run_folder), "--num-images", "2", "--score-threshold", "0", "--output", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert f"wrote {out / 'sheet.png'}" in printed
    for record in val_records[:2]:
        image = read_image(record["file_name"], format="RGB")
        height, width = image.shape[:2]
        pair = _png(out / "tiny_frn" / f"{Path(record['file_name']).stem}.png")
        assert pair.shape == (height, 2 * width + GAP, 3)
        truth, prediction = pair[:, :width], pair[:, width + GAP :]
        inside, _ = _object_masks(record)
        assert _changed(truth, image)[inside].mean() > 0.95
        # A random model keeps some detections at threshold 0: something is drawn.
        assert _changed(prediction, image).mean() > 0.01
        assert (pair[:, width : width + GAP] == 255).all()
    assert not (out / "tiny_frn" / "000002.png").exists()


def test_a_panel_says_what_it_leaves_out_and_a_run_is_labelled_with_its_final_ap(
    run_folder, val_records, tmp_path
):
    checkpoint = checkpoint_from_run(run_folder)
    assert checkpoint.label == "tiny_frn\nbox AP 12.5 / mask AP 11.0"
    assert checkpoint_from_run(run_folder, "FRN").label == "FRN\nbox AP 12.5 / mask AP 11.0"
    done = visualize([checkpoint], tmp_path, num_images=2, score_threshold=2.0, per_image=False)
    for record, (truth, prediction) in zip(val_records, done["notes"], strict=False):
        count = len(record["annotations"])
        assert truth == f"{count} object{'s' if count > 1 else ''}"
        # No score reaches 2: nothing is drawn, and the note says how much was predicted.
        assert re.fullmatch(r"0 of [1-9]\d* drawn, top score 0\.\d\d", prediction), prediction


def test_several_checkpoints_go_side_by_side_in_one_sheet(
    run_folder, val_records, tmp_path, capsys
):
    sizes = [read_image(r["file_name"]).shape[:2] for r in val_records]
    widest, tallest = max(w for _, w in sizes), max(h for h, _ in sizes)
    out = tmp_path / "vis"
    argv = [str(run_folder), str(run_folder / "model_final.pth"), "--labels", "a,b"]
    assert main([*argv, "--output", str(out), "--no-per-image"]) == 0
    sheet = _png(out / "sheet.png")
    # Ground truth, a, b: three columns of the widest image; a row per image.
    assert sheet.shape[1] == GAP + 3 * (widest + GAP)
    assert sheet.shape[0] > 3 * tallest
    assert f"({sheet.shape[1]}x{sheet.shape[0]} px)" in capsys.readouterr().out
    assert not (out / "a").exists()

    main([*argv, "--output", str(out), "--no-per-image", "--transpose"])
    sheet = _png(out / "sheet.png")
    assert sheet.shape[1] == GAP + sum(w + GAP for _, w in sizes)
    assert sheet.shape[0] > 3 * min(h for h, _ in sizes)
    # Not blank: the images and their drawings are on it.
    assert (sheet < 250).any(-1).mean() > 0.5


def test_a_folder_of_images_gets_predictions_only(run_folder, val_records, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    source = Path(val_records[0]["file_name"])
    (images / "photo.png").write_bytes(source.read_bytes())
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "vis"
    assert main([str(run_folder), "--images", str(images), "--output", str(out)]) == 0
    drawn = _png(out / "tiny_frn" / "photo.png")
    assert drawn.shape == read_image(str(source)).shape
    assert (out / "sheet.png").is_file()


def test_a_folder_without_a_model_is_refused_naming_it(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no model_final.pth" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_fit_the_model_is_refused_not_drawn(
    run_folder, tmp_path, capsys
):
    # E.g. a checkpoint of an older revision of the model: drawing it with random weights
    # in place of the missing ones would show a model that was never trained.
    state = torch.load(run_folder / "model_final.pth", weights_only=True)
    missing = next(k for k in state["model"] if k.startswith("roi_heads.box_head"))
    del state["model"][missing]
    torch.save(state, tmp_path / "model_final.pth")
    (tmp_path / "config.yaml").write_bytes((run_folder / "config.yaml").read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--output", str(tmp_path / "vis")])
    assert exit_info.value.code == 2
    assert missing in capsys.readouterr().err
    assert not (tmp_path / "vis" / "sheet.png").exists()


def test_the_script_runs_from_a_checkout():
    done = subprocess.run(
        [sys.executable, os.fspath(REPO / "tools" / "visualize.py"), "--help"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--dataset", "--images", "--num-images", "--score-threshold", "--transpose"):
        assert flag in done.stdout


class _TinyFRNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), FilterResponseNorm2d(4))
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(6),
                                        FilterResponseNorm1d(6), TLU(6))  # fmt: skip

    def forward(self, batch):
        return {"loss": (self.head(self.backbone(batch)) - 1).pow(2).mean()}


def test_frn_statistics_are_recorded_every_period_and_written_with_the_metrics(tmp_path):
    torch.manual_seed(0)
    model = _TinyFRNModel()
    model(torch.randn(2, 3, 6, 6))
    stats = frn_parameter_stats(model)
    # tau starts at 0 everywhere; only the (N, C) FRN learns eps, from eps0 + 1e-4.
    assert stats["frn/tau_mean"] == stats["frn/tau_max"] == 0.0
    assert set(stats) >= {"frn/tau_mean/backbone", "frn/tau_mean/head", "frn/eps_mean/head"}
    assert "frn/eps_mean/backbone" not in stats
    assert stats["frn/eps_min"] == pytest.approx(1e-6 + 1e-4)

    data = iter([torch.randn(2, 3, 6, 6) for _ in range(6)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = SimpleTrainer(model, data, optimizer)
    metrics = tmp_path / "metrics.json"
    trainer.register_hooks([FRNStatsHook(period=2), PeriodicWriter([JSONWriter(str(metrics))], 2)])
    trainer.train(0, 5)
    recorded = [iteration for _, iteration in trainer.storage.history("frn/tau_mean").values()]
    assert recorded == [1, 3, 4]
    written = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in written if "frn/tau_max" in r] == [1, 3, 4]
    assert written[-1]["frn/tau_max"] != 0.0  # trained: tau moved


def test_a_model_without_frn_has_no_statistics():
    assert frn_parameter_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))) == {}
