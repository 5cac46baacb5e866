"""The model-zoo catalog: the checkpoints frn-det's configs evaluate, read from catalog.json.

catalog.json is data, one object per entry with every ``ZooEntry`` field in order; its
canonical text is ``catalog_json(entries)`` (2-space JSON, one value per line), so that a
change shows in a diff as the lines that changed. frn-det's own entries are written into
it from sweep run folders by ``python -m frn_det_tools.model_zoo rows OUT --write``;
detectron2's baselines are typed in.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..engine.validation import config_options_problem

__all__ = [
    "CATALOG",
    "CATALOG_FILE",
    "SOURCES",
    "SOURCE_DETECTRON2",
    "SOURCE_FRN_DET",
    "ChecksumMismatchError",
    "ModelZooError",
    "ZooEntry",
    "build_catalog",
    "catalog_json",
    "load_catalog",
    "lookup",
    "merge_entries",
]

SOURCE_DETECTRON2 = "detectron2"
SOURCE_FRN_DET = "frn-det"
SOURCES = (SOURCE_DETECTRON2, SOURCE_FRN_DET)
CATALOG_FILE = "catalog.json"
"""The catalog's file name inside this package."""
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONFIG_SUFFIXES = (".yaml", ".py")


class ModelZooError(ValueError):
    """A name, file, URL or run folder the model zoo cannot use as given."""


class ChecksumMismatchError(ModelZooError):
    """A checkpoint whose SHA-256 is not the one the catalog records for it."""


@dataclass(frozen=True)
class ZooEntry:
    """One checkpoint of the catalog.

    Attributes:
        name: what ``tools/eval_zoo.py NAME`` takes.
        config: the config it evaluates with, as its path in the repository
            (``configs/...``); the package ships it (``get_config_file``).
        url: where the weights are downloaded from (``detectron2://``, ``https://``:
            once, into iopath's cache; or ``file://``); None when the file is not published.
        sha256: the file's SHA-256 (64 lower-case hex digits), None where nobody has
            recorded it; when set, a file that does not match is refused.
        box_ap, mask_ap: COCO-style AP in percent on ``data``'s test set.
        source: "detectron2" (a released baseline, published AP) or "frn-det" (trained here).
        detectron2_config: detectron2's model-zoo config name, for detectron2's baselines.
        data: "train set -> test set".
        ims_per_gpu, num_gpus: the training batch, images per GPU (process) x processes.
        train_time: how long training took and on what device, as recorded.
        opts: KEY VALUE config options it was trained with, applied again at evaluation.
        reproduce: the one command that trains it.
    """

    name: str
    config: str
    url: str | None
    sha256: str | None
    box_ap: float | None
    mask_ap: float | None
    source: str
    detectron2_config: str | None = None
    data: str = "coco_2017_train -> coco_2017_val"
    ims_per_gpu: int | None = None
    num_gpus: int | None = None
    train_time: str | None = None
    opts: tuple[str, ...] = ()
    reproduce: str | None = None

    @property
    def config_path(self) -> str:
        """``config`` relative to the configs folder, as ``get_config_file`` takes it."""
        return self.config.removeprefix("configs/")


_FIELDS = tuple(f.name for f in dataclasses.fields(ZooEntry))
_REQUIRED = tuple(
    f.name
    for f in dataclasses.fields(ZooEntry)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def _optional(kind: type | tuple[type, ...], value: Any) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _check_entry(entry: ZooEntry, where: str) -> None:
    # Every field's type and form, so that a hand edit of catalog.json fails at load time
    # naming the entry and the field, not later in an evaluation.
    problems = []
    if not isinstance(entry.name, str) or not entry.name:
        problems.append(f"name must be a non-empty string, got {entry.name!r}")
    if not (
        isinstance(entry.config, str)
        and entry.config.startswith("configs/")
        and entry.config.endswith(_CONFIG_SUFFIXES)
    ):
        problems.append(
            f"config must be a path configs/....yaml or configs/....py, got {entry.config!r}"
        )
    for name in ("url", "detectron2_config", "train_time", "reproduce"):
        if not _optional(str, getattr(entry, name)):
            problems.append(f"{name} must be a string or null, got {getattr(entry, name)!r}")
    if not isinstance(entry.data, str):
        problems.append(f"data must be a string, got {entry.data!r}")
    if entry.sha256 is not None and not (
        isinstance(entry.sha256, str) and _SHA256_RE.match(entry.sha256)
    ):
        problems.append(f"sha256 must be 64 lower-case hex digits or null, got {entry.sha256!r}")
    for name in ("box_ap", "mask_ap"):
        if not _optional((int, float), getattr(entry, name)):
            problems.append(f"{name} must be a number or null, got {getattr(entry, name)!r}")
    for name in ("ims_per_gpu", "num_gpus"):
        value = getattr(entry, name)
        if not _optional(int, value) or (value is not None and value < 1):
            problems.append(f"{name} must be an integer >= 1 or null, got {value!r}")
    if entry.source not in SOURCES:
        problems.append(f"source must be one of {', '.join(SOURCES)}, got {entry.source!r}")
    if not isinstance(entry.opts, tuple) or not all(isinstance(o, str) for o in entry.opts):
        problems.append(f"opts must be KEY VALUE strings, got {entry.opts!r}")
    elif problem := config_options_problem(entry.opts):
        problems.append(f"opts must be KEY VALUE strings: {problem}")
    if problems:
        raise ModelZooError(f"{where}: " + "; ".join(problems))


def _entry_from_json(item: Any, where: str) -> ZooEntry:
    if not isinstance(item, dict):
        raise ModelZooError(f"{where}: an entry must be a JSON object, got {item!r}")
    unknown = [key for key in item if key not in _FIELDS]
    missing = [key for key in _REQUIRED if key not in item]
    if unknown or missing:
        raise ModelZooError(
            f"{where} ({item.get('name', '?')!r}): unknown fields {unknown}, missing fields "
            f"{missing}; the fields are {', '.join(_FIELDS)}"
        )
    fields = dict(item)
    if isinstance(fields.get("opts"), list):
        fields["opts"] = tuple(fields["opts"])
    entry = ZooEntry(**fields)
    _check_entry(entry, f"{where} ({entry.name!r})")
    return entry


def build_catalog(entries: Iterable[ZooEntry]) -> dict[str, ZooEntry]:
    """``entries`` by name, in their order.

    Raises:
        ModelZooError: for two entries with one name.
    """
    catalog: dict[str, ZooEntry] = {}
    for entry in entries:
        if entry.name in catalog:
            raise ModelZooError(f"model-zoo name {entry.name!r} is used by two entries")
        catalog[entry.name] = entry
    return catalog


def load_catalog(path: str | os.PathLike | None = None) -> dict[str, ZooEntry]:
    """The catalog in the JSON file ``path`` (default: the one shipped in this package).

    Raises:
        ModelZooError: naming the file and the entry or field it cannot read.
    """
    if path is None:
        text = resources.files(__package__).joinpath(CATALOG_FILE).read_text(encoding="utf-8")
        where = f"{__package__}/{CATALOG_FILE}"
    else:
        where = os.fspath(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ModelZooError(f"cannot read the model-zoo catalog {where!r}: {error}") from error
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise ModelZooError(f"{where} is not valid JSON: {error}") from error
    if not isinstance(items, list):
        raise ModelZooError(f"{where} must hold a JSON list of entries, got {type(items).__name__}")
    return build_catalog(
        _entry_from_json(item, f"{where}, entry {i}") for i, item in enumerate(items)
    )


def catalog_json(entries: Iterable[ZooEntry]) -> str:
    """catalog.json's text for ``entries``: every field of each, in ``ZooEntry``'s order."""
    items = []
    for entry in entries:
        item = dataclasses.asdict(entry)
        item["opts"] = list(entry.opts)
        items.append(item)
    return json.dumps(items, indent=2, ensure_ascii=False) + "\n"


def merge_entries(old: Sequence[ZooEntry], new: Sequence[ZooEntry]) -> list[ZooEntry]:
    """``old`` with entries of the same name replaced by ``new``'s, then ``new``'s others."""
    fresh = {e.name: e for e in new}
    merged = [fresh.pop(e.name, e) for e in old]
    return merged + list(fresh.values())


CATALOG: dict[str, ZooEntry] = load_catalog()
"""The catalog shipped with frn-det, by name."""


def lookup(name: str, catalog: Mapping[str, ZooEntry] | None = None) -> ZooEntry:
    """The catalog entry called ``name`` (default catalog: ``CATALOG``).

    Raises:
        ModelZooError: for an unknown name, listing the available ones.
    """
    catalog = CATALOG if catalog is None else catalog
    if name in catalog:
        return catalog[name]
    close = difflib.get_close_matches(name, list(catalog), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    available = ", ".join(sorted(catalog)) or "none"
    raise ModelZooError(f"unknown model-zoo name {name!r}{hint}; available: {available}")
