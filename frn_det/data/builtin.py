"""The names, classes and on-disk layout of frn-det's embedded shapes dataset, and its
registration with detectron2's DatasetCatalog and MetadataCatalog.

Registering only records where the dataset lives; nothing is generated until
``DatasetCatalog.get("frn_shapes_train")`` (or ``..._val``) is first called.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

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


def register_shapes_datasets(
    root: str | os.PathLike | None = None,
    *,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
) -> None:
    """Register ``frn_shapes_train`` and ``frn_shapes_val`` under ``root`` (see
    ``datasets_root``). Calling it again replaces the earlier registration, so it is safe
    to repeat and is how a test or script points the names at another folder.

    ``num_train``, ``num_val`` and ``seed`` are only used when the first load finds no
    dataset on disk; an existing complete dataset is loaded as it is.
    """
    root = datasets_root(root)
    thing_ids = {i + 1: i for i in range(len(SHAPES_CLASSES))}
    for name, split in SHAPES_SPLITS.items():
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        # Metadata refuses to change a value once set, so a new root needs a fresh entry.
        if name in MetadataCatalog:
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name,
            functools.partial(_load_split, split, root, name, num_train, num_val, seed),
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPES_CLASSES),
            thing_dataset_id_to_contiguous_id=thing_ids,
            evaluator_type="coco",
            json_file=str(shapes_annotation_file(split, root)),
            image_root=str(shapes_image_root(split, root)),
        )


def _load_split(
    split: str, root: Path, dataset_name: str, num_train: int, num_val: int, seed: int
) -> list[dict]:
    # Imported on first load rather than at the top so that importing the package does not
    # import the generator: `python -m frn_det.data.shapes` would otherwise find the module
    # already imported and runpy warns about that.
    from .shapes import load_shapes_split

    return load_shapes_split(
        split, root, dataset_name=dataset_name, num_train=num_train, num_val=num_val, seed=seed
    )
