"""Where frn-det's embedded shapes dataset lives and what it holds: its dataset names, its
classes, the default counts and seed, and its on-disk layout under the datasets root.

Both the generator (``frn_det.data.shapes``) and the registration
(``frn_det.data.builtin``) read these; neither imports the other for them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DEFAULT_NUM_TRAIN",
    "DEFAULT_NUM_VAL",
    "DEFAULT_SEED",
    "SHAPES_CLASSES",
    "SHAPES_DIRNAME",
    "SHAPES_SPLITS",
    "datasets_root",
    "shapes_annotation_file",
    "shapes_dir",
    "shapes_image_root",
]

SHAPES_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star")
# dataset name -> split folder name
SHAPES_SPLITS: dict[str, str] = {"frn_shapes_train": "train", "frn_shapes_val": "val"}
SHAPES_DIRNAME = "frn_shapes"
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 100
DEFAULT_SEED = 0


def datasets_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds detectron2 datasets: ``root`` when given, else
    ``$DETECTRON2_DATASETS``, else ``datasets`` relative to the working directory (the
    same rule as detectron2's builtin datasets)."""
    if root is None:
        root = os.path.expanduser(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    return Path(root)


def shapes_dir(root: str | os.PathLike | None = None) -> Path:
    """``<datasets root>/frn_shapes``, the folder the embedded dataset is cached in."""
    return datasets_root(root) / SHAPES_DIRNAME


def shapes_annotation_file(split: str, root: str | os.PathLike | None = None) -> Path:
    """The COCO json of one split ("train" or "val")."""
    return shapes_dir(root) / "annotations" / f"instances_{split}.json"


def shapes_image_root(split: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of one split's PNG images ("train" or "val")."""
    return shapes_dir(root) / split
