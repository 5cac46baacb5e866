"""A non-editable install of frn-det works away from the checkout: the packages, the catalog
and the configs (package data, real files) are all it needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a build of the project reads: the packages (frn_det/model_zoo/configs links to
# configs/) and the files pyproject.toml names.
SOURCES = ("pyproject.toml", "README.md", "frn_det", "frn_det_tools", "configs")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """frn-det built and installed (``pip install --target``) from a copy of the checkout,
    so that the build's own folders stay out of it."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(
                path,
                source / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )
        else:
            shutil.copy2(path, source / name)
    target = root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
        + ["--no-compile", "--disable-pip-version-check", "--quiet", "--target"]
        + [str(target), str(source)],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def _run_isolated(installed: Path, args: list[str]) -> subprocess.CompletedProcess:
    # Run beside the install, away from the checkout; -P (Python >= 3.11) keeps even that
    # folder off sys.path, so the checkout is reachable only through a path of its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(installed)
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return subprocess.run(
        [sys.executable, *safe_path, *args],
        capture_output=True,
        text=True,
        cwd=installed.parent,
        env=env,
    )


def test_the_installed_configs_are_files_not_links_into_the_checkout(installed):
    configs = installed / "frn_det" / "model_zoo" / "configs"
    shipped = sorted(p.relative_to(configs).as_posix() for p in configs.rglob("*") if p.is_file())
    in_repo = sorted(
        p.relative_to(REPO / "configs").as_posix()
        for p in (REPO / "configs").rglob("*")
        if p.is_file() and p.suffix in (".yaml", ".py")
    )

    assert shipped == in_repo
    assert not [p for p in installed.rglob("*") if p.is_symlink()]
    assert (installed / "frn_det" / "model_zoo" / "catalog.json").is_file()


def test_an_installed_frn_det_imports_finds_and_merges_its_configs_outside_the_checkout(
    installed,
):
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        from detectron2.config import get_cfg

        import frn_det, frn_det_tools
        from frn_det import add_frn_config, model_zoo

        site = Path({str(installed)!r}).resolve()
        for module in (frn_det, frn_det_tools, model_zoo):
            assert Path(module.__file__).resolve().is_relative_to(site), module.__file__
        assert not any(p and Path(p).resolve() == Path({str(REPO)!r}) for p in sys.path)

        path = model_zoo.get_config_file("Shapes/mask_rcnn_R_18_FPN_frn.yaml")
        assert path.is_relative_to(site), path
        cfg = add_frn_config(get_cfg())
        cfg.merge_from_file(str(path))
        assert cfg.MODEL.RESNETS.NORM == "FRN", cfg.MODEL.RESNETS.NORM
        assert model_zoo.get_config("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml").MODEL.RESNETS.NORM
        for entry in model_zoo.CATALOG.values():
            assert model_zoo.get_config_file(entry.config_path).is_relative_to(site)
        print("ok", len(model_zoo.CATALOG))
        """
    )
    done = _run_isolated(installed, ["-c", script])

    assert done.returncode == 0, done.stdout + done.stderr
    catalog = json.loads((REPO / "frn_det" / "model_zoo" / "catalog.json").read_text())
    assert done.stdout.split()[-2:] == ["ok", str(len(catalog))]


def test_an_installed_frn_det_train_net_runs(installed):
    done = _run_isolated(installed, ["-m", "frn_det.train_net", "--help"])

    assert done.returncode == 0, done.stdout + done.stderr
    assert "--config-file" in done.stdout and "--ims-per-gpu" in done.stdout
