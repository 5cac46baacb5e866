import sys

import pytest

from frn_det.evaluation import COCOEVAL_ENV


@pytest.fixture(autouse=True)
def no_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without the engineer's own $FRN_DET_COCOEVAL."""
    monkeypatch.delenv(COCOEVAL_ENV, raising=False)


@pytest.fixture
def without_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import faster_coco_eval` fail as it does where it is not installed."""
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)
