"""The registration of frn-det's embedded shapes dataset with detectron2's DatasetCatalog
and MetadataCatalog (its names, classes and layout are ``frn_det.data.shapes_layout``).

Registering only records where the dataset lives; nothing is generated until
``DatasetCatalog.get("frn_shapes_train")`` (or ``..._val``) is first called, which runs
the generator, ``frn_det.data.shapes``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

from .shapes_layout import (
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    SHAPES_CLASSES,
    SHAPES_SPLITS,
    datasets_root,
    shapes_annotation_file,
    shapes_image_root,
)

__all__ = ["register_shapes_datasets"]


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
