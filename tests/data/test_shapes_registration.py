import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import BoxMode, PolygonMasks

import frn_det.data
from frn_det.data import (
    SHAPES_CLASSES,
    datasets_root,
    register_shapes_datasets,
    shapes,
    shapes_annotation_file,
    shapes_dir,
)
from frn_det.data.shapes import ShapesDatasetError

NAMES = ("frn_shapes_train", "frn_shapes_val")


def test_importing_the_package_registers_both_splits_with_coco_metadata():
    for name, split in zip(NAMES, ("train", "val"), strict=True):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "coco"
        assert meta.thing_classes == list(SHAPES_CLASSES)
        assert meta.json_file == str(shapes_annotation_file(split))
        assert Path(meta.image_root) == shapes_dir() / split


def test_registering_again_does_not_raise_and_generates_nothing(tmp_path):
    register_shapes_datasets(tmp_path)
    register_shapes_datasets(tmp_path)
    importlib.reload(frn_det.data)
    importlib.reload(frn_det.data)
    register_shapes_datasets(tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert MetadataCatalog.get("frn_shapes_val").json_file == str(
        tmp_path / "frn_shapes" / "annotations" / "instances_val.json"
    )


def test_datasets_root_follows_detectron2_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert datasets_root() == tmp_path
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert datasets_root() == Path("datasets")


def test_dataset_catalog_gives_detectron2_dicts_whose_images_load_and_map(tmp_path):
    register_shapes_datasets(tmp_path, num_train=6, num_val=3)
    assert len(DatasetCatalog.get("frn_shapes_val")) == 3
    dicts = DatasetCatalog.get("frn_shapes_train")
    assert len(dicts) == 6
    assert len({d["image_id"] for d in dicts}) == 6
    mapper = DatasetMapper(
        is_train=True, augmentations=[], image_format="BGR", use_instance_mask=True
    )
    for record in dicts:
        assert {"file_name", "height", "width", "image_id", "annotations"} <= set(record)
        image = utils.read_image(record["file_name"], format="BGR")
        assert image.shape == (record["height"], record["width"], 3)
        for ann in record["annotations"]:
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS
            assert 0 <= ann["category_id"] < len(SHAPES_CLASSES)
            assert all(len(p) >= 6 for p in ann["segmentation"])
        mapped = mapper(record)
        assert mapped["image"].shape == (3, record["height"], record["width"])
        instances = mapped["instances"]
        assert len(instances) == len(record["annotations"])
        assert isinstance(instances.gt_masks, PolygonMasks)


def test_the_first_load_generates_and_later_loads_reuse_the_cache(tmp_path, monkeypatch):
    generated = []
    real_generate = shapes.generate_shapes_dataset

    def counting_generate(*args, **kwargs):
        generated.append(args)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(shapes, "generate_shapes_dataset", counting_generate)
    register_shapes_datasets(tmp_path, num_train=4, num_val=2)
    DatasetCatalog.get("frn_shapes_train")
    json_file = shapes_annotation_file("train", tmp_path)
    written = json_file.stat().st_mtime_ns
    DatasetCatalog.get("frn_shapes_val")
    DatasetCatalog.get("frn_shapes_train")
    assert len(generated) == 1
    assert json_file.stat().st_mtime_ns == written


def test_a_malformed_annotation_file_gets_an_error_naming_it(tiny_root):
    register_shapes_datasets(tiny_root)
    json_file = shapes_annotation_file("train", tiny_root)
    json_file.write_text('{"images": [')
    with pytest.raises(ShapesDatasetError, match=r"instances_train\.json is not valid JSON"):
        DatasetCatalog.get("frn_shapes_train")

    json_file.write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(ShapesDatasetError, match=r"instances_train\.json has categories \[\]"):
        DatasetCatalog.get("frn_shapes_train")


def test_a_folder_without_manifest_is_refused_and_left_alone(tmp_path):
    folder = shapes_dir(tmp_path)
    folder.mkdir()
    (folder / "mine.txt").write_text("user data")
    register_shapes_datasets(tmp_path)
    with pytest.raises(ShapesDatasetError, match=r"frn_shapes exists but has no MANIFEST\.json"):
        DatasetCatalog.get("frn_shapes_val")
    assert (folder / "mine.txt").read_text() == "user data"


def test_ground_truth_as_predictions_scores_full_ap_in_coco_evaluator(tiny_root, tmp_path):
    register_shapes_datasets(tiny_root)
    dicts = DatasetCatalog.get("frn_shapes_val")
    evaluator = COCOEvaluator("frn_shapes_val", output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    for record in dicts:
        instances = utils.annotations_to_instances(
            record["annotations"], (record["height"], record["width"]), mask_format="bitmask"
        )
        instances.pred_boxes = instances.gt_boxes
        instances.pred_classes = instances.gt_classes
        instances.pred_masks = instances.gt_masks.tensor
        instances.scores = torch.ones(len(instances))
        evaluator.process([record], [{"instances": instances}])
    results = evaluator.evaluate()
    assert np.isclose(results["bbox"]["AP"], 100.0)
    assert np.isclose(results["segm"]["AP"], 100.0)
