"""The configs shipped with frn-det, found as package data (as ``detectron2.model_zoo`` finds
its own): the repository's ``configs/`` is ``frn_det/model_zoo/configs`` in the package (a
symbolic link in a checkout, real files in a built wheel)."""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Any

from .catalog import ModelZooError

__all__ = ["configs_root", "get_config", "get_config_file"]


def configs_root() -> Path:
    """The folder of the packaged configs (the repository's ``configs/`` in a checkout)."""
    return Path(os.fspath(resources.files(__package__).joinpath("configs"))).resolve()


def get_config_file(config_path: str | os.PathLike) -> Path:
    """The file of a packaged config, given by its path under ``configs/``, e.g.
    ``"Shapes/mask_rcnn_R_18_FPN_frn.yaml"``; a leading ``configs/`` is accepted too.

    Raises:
        ModelZooError: for an absolute path or one that leaves ``configs/``, or a config
            frn-det does not ship (naming the closest one it does).
    """
    relative = Path(os.fspath(config_path).removeprefix("configs/"))
    root = configs_root()
    path = (root / relative).resolve()
    if relative.is_absolute() or not path.is_relative_to(root):
        raise ModelZooError(
            f"config {os.fspath(config_path)!r} must be a path relative to frn-det's configs "
            f"folder ({root}), e.g. 'Shapes/mask_rcnn_R_18_FPN_frn.yaml'"
        )
    if not path.is_file():
        shipped = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        close = difflib.get_close_matches(relative.as_posix(), shipped, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelZooError(
            f"frn-det ships no config {relative.as_posix()!r}{hint}; the configs are the "
            f"files under {root}"
        )
    return path


def get_config(config_path: str | os.PathLike) -> Any:
    """A packaged config, loaded: a YAML file as a detectron2 ``CfgNode`` with frn-det's
    keys (``get_cfg`` + ``add_frn_config``, then the file), a Python file as detectron2's
    ``LazyConfig.load`` reads it. Not frozen, so that it can still be changed.

    Raises:
        ModelZooError: as ``get_config_file``.
    """
    path = get_config_file(config_path)
    if path.suffix == ".py":
        from detectron2.config import LazyConfig

        return LazyConfig.load(os.fspath(path))
    from detectron2.config import get_cfg

    from frn_det.config import add_frn_config

    cfg = add_frn_config(get_cfg())
    cfg.merge_from_file(os.fspath(path))
    return cfg
