"""frn-det's datasets. Importing this package registers ``frn_shapes_train`` and
``frn_shapes_val`` (the embedded shapes dataset, generated on first load) with
detectron2's DatasetCatalog and MetadataCatalog; see datasets.md.

The generator itself is ``frn_det.data.shapes``; the names, classes and folder layout both
use are ``frn_det.data.shapes_layout``.
"""

from .builtin import register_shapes_datasets
from .shapes_layout import (
    SHAPES_CLASSES,
    SHAPES_SPLITS,
    datasets_root,
    shapes_annotation_file,
    shapes_dir,
    shapes_image_root,
)

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_SPLITS",
    "datasets_root",
    "register_shapes_datasets",
    "shapes_annotation_file",
    "shapes_dir",
    "shapes_image_root",
]

register_shapes_datasets()
