"""frn_det refuses to import without detectron2 and names the installer."""

import importlib.util

import pytest

from frn_det import _detectron2


def test_missing_detectron2_raises_import_error_naming_the_installer(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "detectron2" else real_find_spec(name, *a),
    )
    with pytest.raises(ImportError, match="tools/install_detectron2.py"):
        _detectron2.require_detectron2()


def test_present_detectron2_passes_the_check():
    _detectron2.require_detectron2()
