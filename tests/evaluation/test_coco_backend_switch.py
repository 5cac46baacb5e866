"""Choosing the COCO evaluation backend: names, environment variable, auto-detection."""

import pytest

from frn_det.evaluation import (
    COCOEVAL_ENV,
    BackendCOCOEvaluator,
    faster_coco_eval_available,
    resolve_cocoeval_backend,
)

ACCEPTED = "'auto', 'faster', 'pycocotools'"


def test_unknown_backend_name_raises_value_error_naming_switch_value_and_choices():
    with pytest.raises(ValueError) as info:
        resolve_cocoeval_backend("official")
    message = str(info.value)
    assert "TEST.COCOEVAL_BACKEND" in message
    assert "'official'" in message
    assert ACCEPTED in message


def test_unknown_environment_value_raises_value_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv(COCOEVAL_ENV, "fast")
    with pytest.raises(ValueError) as info:
        resolve_cocoeval_backend("auto")
    message = str(info.value)
    assert COCOEVAL_ENV in message
    assert "'fast'" in message
    assert ACCEPTED in message


def test_evaluator_rejects_an_unknown_backend_before_touching_the_dataset():
    # The dataset name is not registered: the backend error must come first.
    with pytest.raises(ValueError, match="TEST.COCOEVAL_BACKEND"):
        BackendCOCOEvaluator("no_such_dataset", backend="Faster")


def test_faster_requested_but_not_installed_raises_import_error_with_install_command(
    without_faster,
):
    with pytest.raises(ImportError) as info:
        resolve_cocoeval_backend("faster")
    message = str(info.value)
    assert "pip install faster-coco-eval" in message
    assert "TEST.COCOEVAL_BACKEND" in message


def test_faster_requested_through_environment_but_not_installed_names_the_variable(
    monkeypatch, without_faster
):
    monkeypatch.setenv(COCOEVAL_ENV, "faster")
    with pytest.raises(ImportError, match=COCOEVAL_ENV):
        resolve_cocoeval_backend("auto")


def test_auto_picks_faster_when_it_is_importable():
    pytest.importorskip("faster_coco_eval")
    assert faster_coco_eval_available()
    assert resolve_cocoeval_backend("auto") == "faster"


def test_auto_falls_back_to_pycocotools_when_faster_is_not_importable(without_faster):
    assert not faster_coco_eval_available()
    assert resolve_cocoeval_backend("auto") == "pycocotools"


def test_pycocotools_needs_no_faster_coco_eval(without_faster):
    assert resolve_cocoeval_backend("pycocotools") == "pycocotools"


def test_environment_variable_decides_when_the_backend_is_auto(monkeypatch):
    monkeypatch.setenv(COCOEVAL_ENV, "pycocotools")
    assert resolve_cocoeval_backend("auto") == "pycocotools"


def test_explicit_backend_wins_over_the_environment_variable(monkeypatch):
    pytest.importorskip("faster_coco_eval")
    monkeypatch.setenv(COCOEVAL_ENV, "pycocotools")
    assert resolve_cocoeval_backend("faster") == "faster"
    monkeypatch.setenv(COCOEVAL_ENV, "faster")
    assert resolve_cocoeval_backend("pycocotools") == "pycocotools"


def test_empty_environment_variable_counts_as_unset(monkeypatch, without_faster):
    monkeypatch.setenv(COCOEVAL_ENV, "")
    assert resolve_cocoeval_backend("auto") == "pycocotools"
