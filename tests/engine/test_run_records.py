"""What a run records about itself: metrics.json as strict JSON (old files with bare NaN
still read), the precision that trained, and the annotations dropped per dataset."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils.events import EventStorage
from torch import nn

from frn_det.config import add_frn_config
from frn_det.engine import Trainer
from frn_det.engine.trainer import (
    StrictJSONWriter,
    drop_boxes_without_area,
    repair_torn_metrics_line,
    set_aside_metrics_from,
    strict_json_value,
)


@pytest.fixture
def trainer_log() -> Iterator[list[str]]:
    """What frn_det.engine.trainer logs at INFO and above during the test."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("frn_det.engine.trainer")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def _refuse(constant: str) -> None:
    raise AssertionError(f"bare {constant} is not JSON")


def test_metrics_json_is_strict_json_with_non_finite_values_as_strings_float_reads(tmp_path):
    path = tmp_path / "metrics.json"
    writer = StrictJSONWriter(str(path))
    with EventStorage(start_iter=9) as storage:
        storage.put_scalars(smoothing_hint=False, **{"bbox/AP": math.nan, "loss": 0.5})
        storage.put_scalar("inf", math.inf, smoothing_hint=False)
        writer.write()
    writer.close()
    [record] = [json.loads(line, parse_constant=_refuse) for line in path.read_text().splitlines()]
    assert record == {"bbox/AP": "NaN", "inf": "Infinity", "loss": 0.5, "iteration": 9}
    assert math.isnan(float(record["bbox/AP"])) and float(record["inf"]) == math.inf


def test_strict_json_value_reaches_into_nested_results():
    value = {"bbox": {"AP": math.nan, "APs": [1.0, -math.inf]}, "n": 3}
    assert strict_json_value(value) == {"bbox": {"AP": "NaN", "APs": [1.0, "-Infinity"]}, "n": 3}


def test_an_old_metrics_json_with_bare_nan_is_still_repaired_and_set_aside(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"bbox/AP": NaN, "iteration": 4}\n{"iteration": 9, "loss": 1.0}\n{"ite')
    repair_torn_metrics_line(str(path))
    assert set_aside_metrics_from(str(path), start_iter=5) == 1
    assert path.read_text() == '{"bbox/AP": NaN, "iteration": 4}\n'
    assert math.isnan(json.loads(path.read_text())["bbox/AP"])


@pytest.mark.parametrize(
    ("amp", "expected"),
    [
        ("False", "Training in float32 (SOLVER.AMP.ENABLED is False)."),
        (
            "True",
            "Training with mixed precision: the forward pass under bfloat16 autocast on the CPU "
            "(SOLVER.AMP.PRECISION 'auto').",
        ),
    ],
)
def test_the_precision_that_trains_is_logged(trainer_log, amp, expected):
    cfg = add_frn_config(get_cfg())
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", amp])
    model = nn.Linear(2, 2)
    Trainer._build_loop(cfg, model, [], torch.optim.SGD(model.parameters(), lr=0.1))
    assert trainer_log == [expected]


def _annotation(image_id: int, ann_id: int, bbox: list[float]) -> dict:
    x, y, w, h = bbox
    polygon = [x, y, x + max(w, 1), y, x + max(w, 1), y + max(h, 1)]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": bbox,
        "area": w * h,
        "iscrowd": 0,
        "segmentation": [polygon],
    }


@pytest.fixture
def dataset_with_flat_boxes(tmp_path: Path) -> Iterator[str]:
    """A COCO dataset of 2 images and 4 annotations, 2 of them with a zero-width or
    zero-height box."""
    name = "frn_test_flat_boxes"
    coco = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 32, "width": 32} for i in (1, 2)],
        "annotations": [
            _annotation(1, 1, [2.0, 2.0, 10.0, 10.0]),
            _annotation(1, 2, [5.0, 5.0, 0.0, 8.0]),
            _annotation(2, 3, [1.0, 1.0, 6.0, 0.0]),
            _annotation(2, 4, [3.0, 3.0, 9.0, 9.0]),
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    register_coco_instances(name, {}, str(tmp_path / "coco.json"), str(tmp_path))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_annotations_without_box_area_are_dropped_and_counted_per_dataset(
    dataset_with_flat_boxes, trainer_log
):
    dicts = DatasetCatalog.get(dataset_with_flat_boxes)
    kept = drop_boxes_without_area(dataset_with_flat_boxes, dicts)
    assert [len(d["annotations"]) for d in kept] == [1, 1]
    assert [len(d["annotations"]) for d in dicts] == [2, 2]  # the input is not modified
    [message] = trainer_log
    assert message.startswith(
        "Dataset 'frn_test_flat_boxes': dropped 2 of its 4 annotations, whose box has zero "
        "width or height (e.g. "
    )
    assert message.endswith("1.png: bbox [5.0, 5.0, 0.0, 8.0]).")


def test_the_training_loader_drops_and_logs_them(dataset_with_flat_boxes, trainer_log):
    cfg = add_frn_config(get_cfg())
    cfg.merge_from_list(["DATASETS.TRAIN", f"('{dataset_with_flat_boxes}',)"])
    cfg.merge_from_list(["DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "1"])
    Trainer.build_train_loader(cfg)
    assert any("dropped 2 of its 4 annotations" in m for m in trainer_log)
