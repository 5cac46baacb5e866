"""Checks that turn bad input into one clear error before training starts.

detectron2 finds most mistakes late and deep: a misspelled config key is a bare
``KeyError``, an unknown norm name fails while the model is built, a batch that the
processes cannot share is an ``assert`` inside the data loader, and a missing or truncated
annotation file fails after the model is built (or, for the test set, after training).
Here every such mistake raises ``InputError`` at config/setup time, naming the thing, the
value received and what is accepted, with the closest valid name where there is one.

- ``load_config``: detectron2's defaults + frn-det's keys + a YAML file + KEY VALUE options,
  with errors for a missing file, invalid YAML, unknown keys and values of the wrong type.
- ``check_config``: frn-det's keys present, every NORM key a registered norm, and a batch
  the processes can share.
- ``check_datasets``: every dataset a run reads is registered and, for COCO-format ones,
  its annotation file and image folder are usable.
- ``explain_config_error``: the same explanations for errors raised by a user's own
  ``cfg.merge_from_file`` / ``merge_from_list`` (e.g. without ``add_frn_config``).
"""

from __future__ import annotations

import difflib
import functools
import json
import mmap
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from frn_det.config import add_frn_config
from frn_det.data import SHAPES_SPLITS
from frn_det.layers import registered_norms

__all__ = [
    "DATASETS_DOC",
    "InputError",
    "check_batch",
    "check_config",
    "check_datasets",
    "check_frn_keys",
    "check_norms",
    "closest",
    "explain_config_error",
    "load_config",
]

DATASETS_DOC = "datasets.md"

# Annotation files up to this size are parsed in full. COCO's train2017 json (448 MB) takes
# seconds and gigabytes to parse, which detectron2 pays again when it loads the dataset, so
# bigger files get a byte-level check instead: an object, complete at both ends (a
# truncated download is the usual failure), mentioning the required keys.
PARSE_LIMIT_BYTES = 64 * 1024 * 1024

_NON_EXISTENT_KEY = re.compile(r"^Non-existent (?:config )?key: (?P<key>\S+)$")
_ODD_OPTIONS = re.compile(
    r"^Override list has odd length: (?P<options>.*); it must be a list of pairs$", re.DOTALL
)
_TYPE_MISMATCH = re.compile(
    r"^Type mismatch \(<class '(?P<want>\w+)'> vs\. <class '(?P<got>\w+)'>\) with values "
    r"\((?P<default>.*) vs\. (?P<value>.*)\) for config key: (?P<key>\S+)$",
    re.DOTALL,
)


class InputError(ValueError):
    """Bad input found before training: a config file, config key or value, or dataset.

    The message is the whole explanation (what, the value received, what is accepted), so
    a command line prints it as it is, without a traceback.
    """


def closest(value: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``value`` (ignoring case), or None when none is close.

    Case is ignored because the usual slip is "frn" for "FRN" or "model.fpn.norm" for
    "MODEL.FPN.NORM", which a case-sensitive difflib ratio scores as unrelated.
    """
    by_lower: dict[str, str] = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    matches = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def _paths(node: CfgNode, prefix: str = "") -> Iterator[tuple[str, object]]:
    # Nodes as well as leaves: an unknown key may be a misspelled section ("MODEL.RESNET").
    for key, value in node.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, CfgNode):
            yield from _paths(value, f"{path}.")


def _config_keys(cfg: CfgNode) -> list[str]:
    return [path for path, _ in _paths(cfg)]


@functools.cache
def _frn_keys() -> frozenset[str]:
    # What add_frn_config adds to detectron2's defaults, nodes included (MODEL.FRN).
    return frozenset(_config_keys(add_frn_config(get_cfg()))) - frozenset(_config_keys(get_cfg()))


def _frn_leaf_keys() -> list[str]:
    return sorted(k for k in _frn_keys() if not any(o.startswith(f"{k}.") for o in _frn_keys()))


def _add_frn_config_hint() -> str:
    return (
        "call frn_det.add_frn_config(cfg) on detectron2's get_cfg() before merge_from_file "
        "(frn_det.engine.validation.load_config does both)"
    )


def explain_config_error(
    error: BaseException, cfg: CfgNode | None = None, source: str = "the config"
) -> InputError | None:
    """An ``InputError`` explaining what detectron2/yacs raised while merging into ``cfg``,
    or None when ``error`` is not one of those.

    Recognised: an unknown key (``KeyError: Non-existent config key`` from a file,
    ``AssertionError: Non-existent key`` from KEY VALUE options), a key of frn-det's config
    used without ``add_frn_config``, a value of the wrong type, KEY VALUE options that do
    not come in pairs, and renamed keys.

    Args:
        error: what ``merge_from_file`` / ``merge_from_list`` raised.
        cfg: the config merged into; its keys are the candidates for "did you mean"
            (detectron2's defaults plus frn-det's when None).
        source: where the input came from, for the message ("config file X").
    """
    text = str(error.args[0]) if error.args else ""
    if isinstance(error, KeyError | AssertionError):
        match = _NON_EXISTENT_KEY.match(text)
        if match:
            key = match["key"]
            if key in _frn_keys():
                return InputError(
                    f"{key} (in {source}) is one of frn-det's config keys, which this config "
                    f"lacks: {_add_frn_config_hint()}"
                )
            known = _config_keys(cfg if cfg is not None else add_frn_config(get_cfg()))
            suggestion = closest(key, known)
            hint = (
                f"; did you mean {suggestion}?"
                if suggestion
                else " in detectron2's or frn-det's config (detectron2/config/defaults.py, "
                "frn_det/config.py)"
            )
            return InputError(f"config key {key} (in {source}) does not exist{hint}")
        match = _ODD_OPTIONS.match(text)
        if match:
            return InputError(
                "the KEY VALUE config options must come in pairs (a key, then its value), "
                f"got an odd number: {match['options']}"
            )
        if isinstance(error, KeyError) and "was renamed to" in text:
            return InputError(f"{text} (in {source})")
    if isinstance(error, ValueError):
        match = _TYPE_MISMATCH.match(text)
        if match:
            return InputError(
                f"config key {match['key']} (in {source}) takes a value of type "
                f"{match['want']} (its default is {match['default']}), got {match['got']} "
                f"{match['value']}"
            )
    return None


def load_config(
    config_file: str | os.PathLike | None, opts: Sequence[str] = (), cfg: CfgNode | None = None
) -> CfgNode:
    """detectron2's defaults (or ``cfg``) with frn-det's keys, merged with ``config_file``
    (``_BASE_`` inheritance) and the ``KEY VALUE`` list ``opts``. ``cfg`` is modified.

    Raises:
        InputError: the file (or a ``_BASE_`` it names) does not exist or is not YAML; a
            key does not exist (with the closest valid key); a value has the wrong type;
            ``opts`` does not come in pairs.
    """
    cfg = add_frn_config(cfg if cfg is not None else get_cfg())
    if config_file:
        path = os.fspath(config_file)
        if not os.path.exists(path):
            raise InputError(f"config file {path} (--config-file) does not exist")
        if not os.path.isfile(path):
            raise InputError(f"config file {path} (--config-file) is not a file")
        _merge(cfg, lambda: cfg.merge_from_file(path), f"config file {path}")
    _merge(cfg, lambda: cfg.merge_from_list(list(opts)), "the KEY VALUE options")
    return cfg


def _merge(cfg: CfgNode, merge: Callable[[], None], source: str) -> None:
    try:
        merge()
    except FileNotFoundError as error:
        # Only a _BASE_ can be missing here: the file itself was checked first.
        raise InputError(
            f"config file {error.filename}, named as _BASE_ by {source} or a file it "
            "inherits from, does not exist (_BASE_ paths are relative to the file naming them)"
        ) from error
    except yaml.YAMLError as error:
        raise InputError(f"{source} is not valid YAML: {' '.join(str(error).split())}") from error
    except (KeyError, AssertionError, ValueError) as error:
        explained = explain_config_error(error, cfg, source)
        if explained is None:
            raise
        raise explained from error


def check_frn_keys(cfg: CfgNode) -> None:
    """Raise ``InputError`` unless ``cfg`` has the keys ``add_frn_config`` adds.

    frn-det's components read MODEL.FRN and its trainer SOLVER.IMS_PER_GPU; a config made
    by detectron2's ``get_cfg()`` alone fails later with a bare ``AttributeError``.
    """
    missing = [key for key in _frn_leaf_keys() if not _has_key(cfg, key)]
    if not missing:
        return
    uses_frn = [key for key, value in _norm_keys(cfg) if value == "FRN"]
    why = ""
    if uses_frn:
        verb = "is" if len(uses_frn) == 1 else "are"
        why = f" ({' and '.join(uses_frn)} {verb} 'FRN', whose options are read from MODEL.FRN)"
    raise InputError(
        f"this config lacks frn-det's keys {', '.join(missing)}{why}: {_add_frn_config_hint()}"
    )


def _has_key(cfg: CfgNode, key: str) -> bool:
    node: object = cfg
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return False
        node = node[part]
    return True


def _norm_keys(cfg: CfgNode) -> list[tuple[str, str]]:
    # Every NORM leaf (MODEL.RESNETS.NORM, MODEL.FPN.NORM, the heads', projects' own, ...).
    return [
        (path, value)
        for path, value in _paths(cfg)
        if path.rsplit(".", 1)[-1] == "NORM" and isinstance(value, str)
    ]


def check_norms(cfg: CfgNode) -> None:
    """Raise ``InputError`` if a NORM key of ``cfg`` names no registered norm.

    Every leaf key named NORM is checked, used by the model or not: a name that is not in
    ``frn_det.layers.registered_norms()`` is a mistake wherever it is.
    """
    accepted = registered_norms()
    for key, value in _norm_keys(cfg):
        if value not in accepted:
            names = ", ".join(repr(name) for name in accepted)
            suggestion = closest(value, [n for n in accepted if n])
            hint = f"; did you mean {suggestion!r}?" if suggestion else "."
            raise InputError(
                f"{key} is {value!r}, which is not a registered norm{hint} Registered norms: "
                f"{names} (frn_det.layers.register_norm adds one)"
            )


def check_batch(cfg: CfgNode, world_size: int) -> None:
    """Raise ``InputError`` unless ``world_size`` processes can share SOLVER.IMS_PER_BATCH.

    detectron2 splits the total batch evenly over the processes and only asserts it deep in
    the data loader. With SOLVER.IMS_PER_GPU > 0 the total batch is IMS_PER_GPU x world
    size (``apply_ims_per_gpu``) and always divides; with IMS_PER_GPU = 0 the batch as
    written must be a positive multiple of the world size, and, if SOLVER.REFERENCE_WORLD_SIZE
    is set (detectron2's own rescaling), a multiple of that.

    Args:
        cfg: the prepared config (after ``prepare_config``).
        world_size: the number of training processes, num_gpus x num_machines.
    """
    batch = cfg.SOLVER.IMS_PER_BATCH
    fix = (
        f"set SOLVER.IMS_PER_BATCH to a multiple of {world_size}, or give the images per GPU "
        f"instead (--ims-per-gpu N or SOLVER.IMS_PER_GPU N, a total batch of N x {world_size})"
    )
    if batch < 1:
        raise InputError(f"SOLVER.IMS_PER_BATCH must be >= 1, got {batch}; {fix}")
    if batch < world_size:
        raise InputError(
            f"SOLVER.IMS_PER_BATCH is {batch}, fewer images than the {world_size} training "
            f"processes (num_gpus x num_machines), so some would get none; {fix}"
        )
    if batch % world_size:
        below, above = batch // world_size * world_size, -(-batch // world_size) * world_size
        raise InputError(
            f"SOLVER.IMS_PER_BATCH is {batch}, which {world_size} training processes "
            f"(num_gpus x num_machines) cannot share equally (e.g. {below} or {above} can); "
            f"{fix}"
        )
    reference = cfg.SOLVER.get("REFERENCE_WORLD_SIZE", 0)
    if reference and batch % reference:
        raise InputError(
            f"SOLVER.IMS_PER_BATCH ({batch}) must be a multiple of SOLVER.REFERENCE_WORLD_SIZE "
            f"({reference}), which detectron2 rescales it from; set REFERENCE_WORLD_SIZE to 0 "
            "or use --ims-per-gpu"
        )


def check_config(cfg: CfgNode, world_size: int) -> None:
    """``check_frn_keys``, ``check_norms`` and ``check_batch`` on a prepared config."""
    check_frn_keys(cfg)
    check_norms(cfg)
    check_batch(cfg, world_size)


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

    Checks DATASETS.TEST, and DATASETS.TRAIN when ``train``: each must be registered with
    detectron2's DatasetCatalog. For COCO-format ones (metadata ``json_file``) the json
    must exist and be a COCO object with "images" (not empty) and "categories", and for
    training datasets "annotations" (test sets such as COCO test-dev have none); the
    metadata's ``image_root``, if any, must be a folder with something in it. frn-det's
    embedded datasets (``frn_shapes_*``) are skipped: their files are generated, and
    checked, on first load.
    """
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
    problem = _coco_json_problem(Path(json_file), needs_annotations)
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


def _coco_json_problem(path: Path, needs_annotations: bool) -> str:
    """What is wrong with the COCO json at ``path`` ("" when nothing is)."""
    required = (
        ("images", "annotations", "categories") if needs_annotations else ("images", "categories")
    )
    described = "a COCO file is an object with 'images', 'annotations' and 'categories'"
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    if size > PARSE_LIMIT_BYTES:
        return _large_json_problem(path, required, described)
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except UnicodeDecodeError:
        return "is not text (UTF-8 JSON)"
    except json.JSONDecodeError as error:
        return f"is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}; {described}"
    missing = [key for key in required if key not in data]
    if missing:
        return f"has no {' or '.join(repr(k) for k in missing)}; {described}"
    wrong = [key for key in required if not isinstance(data[key], list)]
    if wrong:
        return f"has {' and '.join(repr(k) for k in wrong)} that is not a list; {described}"
    if not data["images"]:
        return "lists no images"
    return ""


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
