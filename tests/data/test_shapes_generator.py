import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from frn_det.data import (
    SHAPES_CLASSES,
    shapes,
    shapes_annotation_file,
    shapes_dir,
    shapes_image_root,
)
from frn_det.data.shapes import (
    GENERATOR_VERSION,
    ShapesDatasetError,
    ensure_shapes_dataset,
    generate_shapes_dataset,
    render_shapes_image,
    shapes_main,
)


def _files(root: Path) -> dict[str, bytes]:
    folder = shapes_dir(root)
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _load(root: Path, split: str = "train") -> COCO:
    return COCO(str(shapes_annotation_file(split, root)))


def test_same_seed_gives_byte_identical_json_and_images(tiny_root, tmp_path_factory):
    again = tmp_path_factory.mktemp("again")
    generate_shapes_dataset(again, num_train=8, num_val=4, seed=0)
    first, second = _files(tiny_root), _files(again)
    assert sorted(first) == sorted(second)
    assert len(first) == 8 + 4 + 2 + 1  # images, two json files, manifest
    assert first == second


def test_different_seed_gives_different_json_and_images(tiny_root, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    generate_shapes_dataset(other, num_train=8, num_val=4, seed=1)
    first, second = _files(tiny_root), _files(other)
    assert first["annotations/instances_train.json"] != second["annotations/instances_train.json"]
    assert all(first[f"train/{i:06d}.png"] != second[f"train/{i:06d}.png"] for i in range(8))


def test_train_and_val_images_differ(tiny_root):
    files = _files(tiny_root)
    assert files["train/000000.png"] != files["val/000000.png"]


def test_annotations_are_valid_coco_with_boxes_around_masks(tiny_root):
    for split, count in (("train", 8), ("val", 4)):
        coco = _load(tiny_root, split)
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES_CLASSES)
        assert len(coco.getImgIds()) == count
        for image in coco.loadImgs(coco.getImgIds()):
            with Image.open(shapes_image_root(split, tiny_root) / image["file_name"]) as png:
                assert png.size == (image["width"], image["height"])
                assert png.mode == "RGB"
            assert 160 <= image["height"] <= 256 and 160 <= image["width"] <= 256
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            assert 1 <= len(annotations) <= 5
            for ann in annotations:
                assert ann["category_id"] in coco.getCatIds()
                assert ann["iscrowd"] == 0
                mask = coco.annToMask(ann).astype(bool)
                assert ann["area"] > 0 and ann["area"] == mask.sum()
                x, y, w, h = ann["bbox"]
                rows, cols = np.nonzero(mask)
                assert x <= cols.min() and cols.max() + 1 <= x + w
                assert y <= rows.min() and rows.max() + 1 <= y + h
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])


def test_polygon_masks_match_the_visible_pixels_of_the_drawn_objects(tiny_root):
    coco = _load(tiny_root)
    for index, image in enumerate(coco.loadImgs(sorted(coco.getImgIds()))):
        scene = render_shapes_image(0, "train", index)
        with Image.open(shapes_image_root("train", tiny_root) / image["file_name"]) as png:
            np.testing.assert_array_equal(np.asarray(png), scene.image)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert [a["category_id"] for a in annotations] == scene.category_ids
        for ann, visible, full in zip(
            annotations, scene.visible_masks, scene.full_masks, strict=True
        ):
            mask = coco.annToMask(ann).astype(bool)
            iou = (mask & visible).sum() / (mask | visible).sum()
            assert iou > 0.9
            assert not (visible & ~full).any()


def test_later_objects_hide_parts_of_earlier_ones_in_some_images():
    occluded_images = 0
    for index in range(8):
        scene = render_shapes_image(0, "train", index)
        visible = scene.visible_masks.sum(axis=(1, 2))
        full = scene.full_masks.sum(axis=(1, 2))
        assert (visible >= shapes.MIN_VISIBLE_FRACTION * full).all()
        # The front object is never hidden.
        assert visible[-1] == full[-1]
        occluded_images += bool((visible < full).any())
    assert occluded_images >= 2


def test_objects_are_between_24_and_96_pixels_across():
    for index in range(8):
        for full in render_shapes_image(0, "val", index).full_masks:
            rows, cols = np.nonzero(full)
            extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
            # The size is the diameter of the shape's circle; a triangle spans 0.87 of it.
            assert 0.85 * 24 <= extent <= 96 + 1


def test_an_interrupted_generation_leaves_no_dataset_that_looks_complete(tmp_path, monkeypatch):
    calls = []
    real_render = shapes.render_shapes_image

    def render_then_fail(seed, split, index):
        calls.append(index)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_render(seed, split, index)

    monkeypatch.setattr(shapes, "render_shapes_image", render_then_fail)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes_dataset(tmp_path, num_train=8, num_val=4)
    assert not shapes_dir(tmp_path).exists()
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(shapes, "render_shapes_image", real_render)
    ensure_shapes_dataset(tmp_path, num_train=8, num_val=4)
    assert len(_load(tmp_path).getImgIds()) == 8


def test_an_interrupted_regeneration_keeps_the_previous_dataset(tiny_root, monkeypatch):
    before = _files(tiny_root)

    def fail(seed, split, index):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(shapes, "render_shapes_image", fail)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_shapes_dataset(tiny_root, num_train=3, num_val=3, seed=7)
    assert _files(tiny_root) == before
    assert [p.name for p in tiny_root.iterdir()] == ["frn_shapes"]


def test_the_command_line_generates_once_then_reports_nothing_to_do(tmp_path, capsys):
    argv = ["--root", str(tmp_path), "--num-train", "3", "--num-val", "2", "--seed", "5"]
    assert shapes_main(argv) == 0
    manifest = json.loads((shapes_dir(tmp_path) / "MANIFEST.json").read_text())
    assert manifest == {
        "generator_version": GENERATOR_VERSION,
        "num_train": 3,
        "num_val": 2,
        "seed": 5,
    }
    json_file = shapes_annotation_file("train", tmp_path)
    written = json_file.stat().st_mtime_ns
    capsys.readouterr()
    assert shapes_main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert json_file.stat().st_mtime_ns == written


def test_an_unwritable_root_gets_an_error_naming_it(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    root = blocker / "datasets"
    with pytest.raises(ShapesDatasetError, match=r"a_file.*datasets\.md"):
        generate_shapes_dataset(root, num_train=1, num_val=1)
    assert shapes_main(["--root", str(root), "--num-train", "1", "--num-val", "1"]) == 2
    assert "a_file" in capsys.readouterr().err


def test_counts_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="num_train must be a positive number of images, got 0"):
        generate_shapes_dataset(tmp_path, num_train=0, num_val=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_val": 2.5}, "num_val must be a positive number of images, got float 2.5"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"seed": "0"}, "seed must be an integer >= 0, got str '0'"),
    ],
)
def test_bad_counts_and_seeds_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    root = tmp_path / "datasets"
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_shapes_dataset(root, **{"num_train": 1, "num_val": 1, **kwargs})
    assert not root.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-train", "0"], "argument --num-train: must be a positive number of images, got 0"),
        (["--num-val", "-3"], "argument --num-val: must be a positive number of images, got -3"),
        (["--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
    ],
)
def test_the_command_line_names_the_bad_flag_and_writes_nothing(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exited:
        shapes_main(["--root", str(tmp_path / "datasets"), *flags])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"python -m frn_det.data.shapes: error: {message}"
    )
    assert not (tmp_path / "datasets").exists()


def test_a_root_that_is_a_file_is_named_as_a_file(tmp_path, capsys):
    root = tmp_path / "notes.txt"
    root.write_text("mine\n")
    assert shapes_main(["--root", str(root), "--num-train", "1", "--num-val", "1"]) == 2
    assert capsys.readouterr().err.startswith(
        f"python -m frn_det.data.shapes: error: Cannot write the shapes dataset under {root}: "
        f"{root} is a file, not a folder."
    )
    assert root.read_text() == "mine\n"


def test_a_dataset_from_another_generator_version_is_regenerated(tiny_root):
    manifest_file = shapes_dir(tiny_root) / "MANIFEST.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["generator_version"] = GENERATOR_VERSION - 1
    manifest_file.write_text(json.dumps(manifest))
    (shapes_annotation_file("val", tiny_root)).write_text("stale")

    ensure_shapes_dataset(tiny_root)
    assert json.loads(manifest_file.read_text())["generator_version"] == GENERATOR_VERSION
    assert len(_load(tiny_root, "val").getImgIds()) == 4
