"""A catalog entry's checkpoint: fetched (downloaded once, or a local copy), checked against
the catalog's SHA-256, and the train_net arguments that evaluate it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..engine.validation import check_config_options
from .catalog import ChecksumMismatchError, ModelZooError, ZooEntry
from .config_files import get_config_file

__all__ = ["eval_only_args", "fetch", "sha256_of", "verify"]

_HASH_CHUNK = 1 << 20


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path``, as 64 lower-case hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _retrain_hint(entry: ZooEntry) -> str:
    if not entry.reproduce:
        return ""
    return f"; it is trained by: {entry.reproduce}"


def fetch(entry: ZooEntry, weights: str | os.PathLike | None = None) -> Path:
    """The local file of ``entry``'s weights: ``weights`` when given, else the catalog's
    URL, downloaded once into iopath's cache (detectron2's PathManager) or, for ``file://``
    URLs and plain paths (relative to the working directory), read in place.

    Raises:
        ModelZooError: naming the file or URL that is missing or could not be downloaded,
            or saying that the checkpoint is not published (and how it is trained).
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelZooError(f"--weights {os.fspath(path)!r} for {entry.name} is not a file")
        return path
    if entry.url is None:
        raise ModelZooError(
            f"the checkpoint of {entry.name} is not published (the catalog has no URL for "
            f"it); pass a copy with --weights PATH{_retrain_hint(entry)}"
        )
    if entry.url.startswith("file://") or "://" not in entry.url:
        path = Path(unquote(urlparse(entry.url).path)) if "://" in entry.url else Path(entry.url)
        path = path.expanduser()
        if not path.is_file():
            raise ModelZooError(
                f"the checkpoint of {entry.name}, {os.fspath(path)!r}, does not exist; pass "
                f"a copy with --weights PATH{_retrain_hint(entry)}"
            )
        return path
    from detectron2.utils.file_io import PathManager

    try:
        return Path(PathManager.get_local_path(entry.url))
    except OSError as error:
        raise ModelZooError(
            f"could not download the checkpoint of {entry.name} from {entry.url}: {error}. "
            "Download it where the network allows and pass it with --weights PATH"
        ) from error


def verify(entry: ZooEntry, path: str | os.PathLike) -> str:
    """Check ``path`` against the SHA-256 the catalog records for ``entry``; returns the
    file's SHA-256. Entries without a recorded hash pass (there is nothing to compare).

    Nothing is deleted on a mismatch: the file may be the user's own, and a cached download
    is worth inspecting before it is thrown away.

    Raises:
        ChecksumMismatchError: naming the file, the expected and the actual SHA-256.
    """
    actual = sha256_of(path)
    if entry.sha256 is not None and actual != entry.sha256.lower():
        raise ChecksumMismatchError(
            f"refusing to evaluate {os.fspath(path)!r} as {entry.name}: its SHA-256 is "
            f"{actual}, the catalog expects {entry.sha256}. The file was left where it is. "
            "If it was downloaded, delete it and run again; a checkpoint trained again is a "
            "different file, evaluate it with tools/train_net.py --eval-only MODEL.WEIGHTS "
            "PATH instead."
        )
    return actual


def eval_only_args(
    entry: ZooEntry,
    weights: str | os.PathLike,
    *,
    num_gpus: int = 1,
    dist_url: str | None = None,
    opts: Sequence[str] = (),
) -> list[str]:
    """The ``python -m frn_det.train_net`` (``tools/train_net.py``) arguments that evaluate
    ``weights`` with ``entry``'s packaged config: ``--eval-only``, the entry's training
    options, the user's ``opts``, then MODEL.WEIGHTS (last, so it wins) and, unless ``opts``
    sets it, OUTPUT_DIR ``output/eval_zoo/NAME``.

    Raises:
        ModelZooError: for ``opts`` that are not KEY VALUE pairs or that set MODEL.WEIGHTS,
            or a config the package does not ship.
    """
    check_config_options(opts, error=ModelZooError)
    keys = list(opts[::2])
    if "MODEL.WEIGHTS" in keys:
        raise ModelZooError(
            "MODEL.WEIGHTS is the catalog's checkpoint; to evaluate another file of "
            f"{entry.name}, pass it with --weights PATH"
        )
    config = get_config_file(entry.config_path)
    args = ["--config-file", os.fspath(config), "--eval-only", "--num-gpus", str(num_gpus)]
    if dist_url is not None:
        args += ["--dist-url", dist_url]
    args += [*entry.opts, *opts]
    if "OUTPUT_DIR" not in keys:
        args += ["OUTPUT_DIR", os.fspath(Path("output") / "eval_zoo" / entry.name)]
    return [*args, "MODEL.WEIGHTS", os.fspath(weights)]
