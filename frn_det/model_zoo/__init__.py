"""frn-det's model zoo, after ``detectron2.model_zoo``: the configs shipped with the package
and the catalog of checkpoints they evaluate (catalog.json, listed in MODEL_ZOO.md).

    from frn_det import model_zoo

    cfg = model_zoo.get_config("Shapes/mask_rcnn_R_18_FPN_frn.yaml")   # a CfgNode
    path = model_zoo.get_config_file("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml")
    entry = model_zoo.lookup("mask_rcnn_R_50_FPN_3x_gn")
    weights = model_zoo.fetch(entry)          # downloaded once, or --weights' local copy
    model_zoo.verify(entry, weights)          # the catalog's SHA-256, where it records one

``tools/eval_zoo.py NAME`` does the last three and evaluates the checkpoint.
"""

from .catalog import (
    CATALOG,
    SOURCE_DETECTRON2,
    SOURCE_FRN_DET,
    ChecksumMismatchError,
    ModelZooError,
    ZooEntry,
    build_catalog,
    catalog_json,
    load_catalog,
    lookup,
    merge_entries,
)
from .checkpoints import eval_only_args, fetch, sha256_of, verify
from .config_files import configs_root, get_config, get_config_file

__all__ = [
    "CATALOG",
    "SOURCE_DETECTRON2",
    "SOURCE_FRN_DET",
    "ChecksumMismatchError",
    "ModelZooError",
    "ZooEntry",
    "build_catalog",
    "catalog_json",
    "configs_root",
    "eval_only_args",
    "fetch",
    "get_config",
    "get_config_file",
    "load_catalog",
    "lookup",
    "merge_entries",
    "sha256_of",
    "verify",
]
