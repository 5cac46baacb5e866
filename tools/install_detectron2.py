#!/usr/bin/env python
"""Install detectron2 into the running Python environment.

detectron2 is not published on PyPI by its authors, so frn-det cannot declare it as a pip
dependency. This script picks the first source that works, in this order:

1. an already importable detectron2: nothing is done;
2. ``DETECTRON2_SOURCE`` when set: any pip requirement or local clone, passed to
   ``pip install --no-build-isolation`` (the official git URL builds the compiled ops);
3. the PyPI wheel ``sal-detectron2==0.7.2``, which carries detectron2's Python sources
   from upstream commit a59f056. Only its ``detectron2/`` package is copied into
   site-packages, without the bundled ``_C*.so`` (built for CPython 3.10) and without
   the wheel's top-level ``tools/``. detectron2's compiled ops are then absent.

It prints which source it used, is idempotent, and exits non-zero with a message saying
what to do when no source works. It imports nothing from frn_det, so it runs before
frn-det itself can be imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

WHEEL_REQUIREMENT = "sal-detectron2==0.7.2"
WHEEL_FILENAME = "sal_detectron2-0.7.2-cp310-none-any.whl"
# The wheel whose contents were checked against upstream commit a59f056. A file with
# another hash is refused rather than copied into site-packages.
WHEEL_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
PACKAGE = "detectron2"
COMPILED_OPS_NOTE = (
    "detectron2's compiled ops (_C) are absent: no rotated-box ops, no deformable "
    "convolution and no fast COCOeval. Faster/Mask R-CNN and RetinaNet do not need them; "
    "set DETECTRON2_SOURCE to a detectron2 clone or git URL to build them."
)


class InstallError(RuntimeError):
    """No source could install detectron2; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Where detectron2 comes from: ``kind`` is "importable", "custom" or "wheel"."""

    kind: str
    detail: str


def choose_source(environ: Mapping[str, str], importable_at: str | None) -> Source:
    """Pick the detectron2 source from the environment, following the module docstring's order.

    ``importable_at`` is the location of an importable detectron2, or None.
    """
    if importable_at is not None:
        return Source("importable", importable_at)
    custom = environ.get("DETECTRON2_SOURCE", "").strip()
    if custom:
        return Source("custom", custom)
    return Source("wheel", WHEEL_REQUIREMENT)


def find_importable_detectron2() -> str | None:
    """Location of the detectron2 package this interpreter would import, or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return str(next(iter(spec.submodule_search_locations)))
    return spec.origin


def is_wanted_member(name: str) -> bool:
    """True for a wheel member that belongs in the installed detectron2 package.

    Keeps ``detectron2/...`` and drops compiled extensions built for another Python
    (``detectron2/_C*.so``), the wheel's top-level ``tools/`` and its metadata.
    """
    if not name.startswith(PACKAGE + "/") or name.endswith("/"):
        return False
    base = name.rsplit("/", 1)[-1]
    is_compiled = base.endswith((".so", ".pyd", ".dylib"))
    return not is_compiled


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_package(wheel: Path, site_packages: Path) -> Path:
    """Copy the wanted members of ``wheel`` into ``site_packages/detectron2``.

    The package is written to a temporary folder next to its destination and renamed into
    place, so an interrupted install never leaves a half-written detectron2 behind.
    Returns the installed package folder.
    """
    target = site_packages / PACKAGE
    if target.exists():
        raise InstallError(
            f"{target} already exists but Python cannot import detectron2 from it; "
            "remove that folder and run this script again"
        )
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if is_wanted_member(m)]
        if not any(m == f"{PACKAGE}/__init__.py" for m in members):
            raise InstallError(f"{wheel} holds no {PACKAGE}/__init__.py: not a detectron2 wheel")
        staging = Path(tempfile.mkdtemp(prefix=".detectron2-", dir=site_packages))
        try:
            archive.extractall(staging, members)
            os.replace(staging / PACKAGE, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def download_wheel(cache_dir: Path) -> Path:
    """Fetch the sal-detectron2 wheel from PyPI into ``cache_dir`` (reused when present)."""
    wheel = cache_dir / WHEEL_FILENAME
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.10", "--dest", str(cache_dir), WHEEL_REQUIREMENT,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise InstallError(
                f"could not download {WHEEL_REQUIREMENT} from PyPI "
                f"(pip exit code {result.returncode}):\n{result.stderr.strip()}"
            )
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        raise InstallError(
            f"{wheel} has SHA-256 {actual}, expected {WHEEL_SHA256}; delete it and retry, "
            "or set DETECTRON2_SOURCE to another detectron2"
        )
    return wheel


def pip_install(requirement: str) -> None:
    """Install a user-chosen detectron2 requirement or clone with pip."""
    command = [sys.executable, "-m", "pip", "install", "--no-build-isolation", requirement]
    if subprocess.run(command).returncode != 0:
        raise InstallError(
            f"pip could not install DETECTRON2_SOURCE={requirement!r}; fix or unset it "
            f"to fall back to the PyPI wheel {WHEEL_REQUIREMENT}"
        )


def install(
    environ: Mapping[str, str],
    site_packages: Path,
    cache_dir: Path,
    find_importable: Callable[[], str | None] = find_importable_detectron2,
    fetch_wheel: Callable[[Path], Path] = download_wheel,
    install_requirement: Callable[[str], None] = pip_install,
) -> str:
    """Install detectron2 from the first working source; returns what was done, for printing."""
    source = choose_source(environ, find_importable())
    if source.kind == "importable":
        return f"detectron2 is already importable from {source.detail}; nothing to do"
    if source.kind == "custom":
        install_requirement(source.detail)
        return f"installed detectron2 from DETECTRON2_SOURCE={source.detail}"
    wheel = fetch_wheel(cache_dir)
    target = extract_package(wheel, site_packages)
    return f"installed detectron2 from the PyPI wheel {WHEEL_REQUIREMENT} into {target}\n" + (
        COMPILED_OPS_NOTE
    )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "frn-det" / "wheels"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache-dir", type=Path, default=default_cache_dir(), help="where the wheel is kept"
    )
    args = parser.parse_args(argv)
    site_packages = Path(sysconfig.get_paths()["purelib"])
    try:
        print(install(os.environ, site_packages, args.cache_dir))
    except InstallError as error:
        print(f"install_detectron2: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
