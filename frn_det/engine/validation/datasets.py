"""The datasets a run reads, checked before anything is built: registered, and for
COCO-format ones an annotation file and an image folder that hold what the run needs.

detectron2 finds a missing or truncated annotation file only once the model is built (for
the test set, after training); ``check_datasets`` finds it first and names the dataset,
the file and where datasets are looked for.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from frn_det.data import SHAPES_SPLITS

from .errors import InputError, closest

__all__ = ["DATASETS_DOC", "PARSE_LIMIT_BYTES", "check_datasets"]

DATASETS_DOC = "datasets.md"

# Annotation files up to this size are parsed in full. COCO's train2017 json (448 MB) takes
# seconds and gigabytes to parse, which detectron2 pays again when it loads the dataset, so
# bigger files get a byte-level check instead: an object, complete at both ends (a
# truncated download is the usual failure), mentioning the required keys.
PARSE_LIMIT_BYTES = 64 * 1024 * 1024

def _datasets_root_hint() -> str:
    root = os.environ.get("DETECTRON2_DATASETS")
    where = (
        f"DETECTRON2_DATASETS is {root}"
        if root
        else f"DETECTRON2_DATASETS is not set, so detectron2's datasets are read from "
        f"./datasets in {os.getcwd()}"
    )
    return f"{where}; see {DATASETS_DOC} for where datasets go and how to register your own"


def check_datasets(cfg: CfgNode, train: bool = True) -> None:
    """Raise ``InputError`` unless the datasets a run reads can be read.

    DATASETS.TRAIN must name at least one dataset when ``train``, DATASETS.TEST when not
    (``--eval-only``). Checks DATASETS.TEST, and DATASETS.TRAIN when ``train``: each must be
    registered with detectron2's DatasetCatalog. For COCO-format ones (metadata
    ``json_file``) the json must exist and be a COCO object with "images" (not empty) and
    "categories", and for
    training datasets "annotations" (test sets such as COCO test-dev have none); the
    metadata's ``image_root``, if any, must be a folder holding every image the json lists
    (checked for files parsed in full, see PARSE_LIMIT_BYTES). frn-det's
    embedded datasets (``frn_shapes_*``) are skipped: their files are generated, and
    checked, on first load.
    """
    if train and not cfg.DATASETS.TRAIN:
        raise InputError(
            "DATASETS.TRAIN is (), so there is nothing to train on; name registered datasets, "
            f"e.g. DATASETS.TRAIN \"('frn_shapes_train',)\" ({DATASETS_DOC} lists them)"
        )
    if not train and not cfg.DATASETS.TEST:
        raise InputError(
            "DATASETS.TEST is (), so --eval-only would evaluate nothing; name registered "
            f"datasets, e.g. DATASETS.TEST \"('frn_shapes_val',)\" ({DATASETS_DOC} lists them)"
        )
    fields = ["DATASETS.TRAIN", "DATASETS.TEST"] if train else ["DATASETS.TEST"]
    for field in fields:
        for name in cfg.DATASETS[field.split(".")[1]]:
            _check_dataset(name, field, needs_annotations=field == "DATASETS.TRAIN")


def _check_dataset(name: str, field: str, needs_annotations: bool) -> None:
    if name not in DatasetCatalog:
        suggestion = closest(name, DatasetCatalog.list())
        hint = f"; did you mean {suggestion!r}?" if suggestion else "."
        raise InputError(
            f"dataset {name!r} ({field}) is not registered with detectron2's DatasetCatalog"
            f"{hint} Register it before the run starts (e.g. with "
            f"detectron2.data.datasets.register_coco_instances); {_datasets_root_hint()}"
        )
    if name in SHAPES_SPLITS:
        return
    metadata = MetadataCatalog.get(name)
    json_file = metadata.get("json_file")
    if json_file is None:
        return
    problem, coco = _coco_json_problem(Path(json_file), needs_annotations)
    if problem:
        raise InputError(
            f"dataset {name!r} ({field}): its annotation file {json_file} {problem}. "
            + _datasets_root_hint()
        )
    image_root = metadata.get("image_root")
    if image_root is None:
        return
    if not os.path.exists(image_root):
        problem = "does not exist"
    elif not os.path.isdir(image_root):
        problem = "is not a folder"
    elif not any(os.scandir(image_root)):
        problem = "is empty"
    if problem:
        raise InputError(
            f"dataset {name!r} ({field}): its image folder {image_root} {problem}. "
            + _datasets_root_hint()
        )
    missing = _missing_images(coco, image_root) if coco is not None else []
    if missing:
        listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise InputError(
            f"dataset {name!r} ({field}): {len(missing)} of the {len(coco['images'])} images "
            f"its annotation file {json_file} lists are not in its image folder {image_root} "
            f"({listed}); an incomplete download or extraction? " + _datasets_root_hint()
        )


def _missing_images(coco: dict, image_root: str) -> list[str]:
    # One listing per folder rather than a stat per image: COCO val lists 5000 images.
    present: dict[str, set[str]] = {}
    missing = []
    for image in coco["images"]:
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(file_name, str):
            missing.append(repr(file_name))
            continue
        folder, base = os.path.split(os.path.join(image_root, file_name))
        if folder not in present:
            try:
                present[folder] = set(os.listdir(folder))
            except OSError:
                present[folder] = set()
        if base not in present[folder]:
            missing.append(file_name)
    return missing


def _coco_json_problem(path: Path, needs_annotations: bool) -> tuple[str, dict | None]:
    """What is wrong with the COCO json at ``path`` ("" when nothing is), and its content
    when it was parsed and is fine (None for a file too large to parse here)."""
    required = (
        ("images", "annotations", "categories") if needs_annotations else ("images", "categories")
    )
    described = "a COCO file is an object with 'images', 'annotations' and 'categories'"
    if not path.exists():
        return "does not exist", None
    if not path.is_file():
        return "is not a file", None
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)", None
    if size > PARSE_LIMIT_BYTES:
        return _large_json_problem(path, required, described), None
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except UnicodeDecodeError:
        return "is not text (UTF-8 JSON)", None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        return f"is not valid JSON ({error.msg} at {where})", None
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}; {described}", None
    missing = [key for key in required if key not in data]
    if missing:
        return f"has no {' or '.join(repr(k) for k in missing)}; {described}", None
    wrong = [key for key in required if not isinstance(data[key], list)]
    if wrong:
        listed = " and ".join(repr(k) for k in wrong)
        return f"has {listed} that is not a list; {described}", None
    if not data["images"]:
        return "lists no images", None
    return "", data


def _large_json_problem(path: Path, required: Sequence[str], described: str) -> str:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        head = data[:4096].lstrip()
        tail = data[max(0, len(data) - 4096) :].rstrip()
        if not head.startswith(b"{"):
            return f"does not start with '{{'; {described}"
        if not tail.endswith(b"}"):
            return "does not end with '}': it looks truncated (an interrupted download?)"
        missing = [key for key in required if data.find(f'"{key}"'.encode()) < 0]
    if missing:
        return f"has no {' or '.join(repr(k) for k in missing)}; {described}"
    return ""
