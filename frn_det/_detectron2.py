"""The import-time check for detectron2, which pip cannot install as a dependency."""

from __future__ import annotations

import importlib.util

INSTALL_HINT = (
    "frn-det needs detectron2, which its authors do not publish on PyPI, so pip does not "
    "install it with frn-det. Install it into this environment with "
    "`python tools/install_detectron2.py` from the frn-det repository (it uses "
    "DETECTRON2_SOURCE when set, else the PyPI wheel sal-detectron2==0.7.2), or run "
    "`make env`."
)


def require_detectron2() -> None:
    """Raise ImportError with the installer's name when detectron2 cannot be imported."""
    if importlib.util.find_spec("detectron2") is None:
        raise ImportError(INSTALL_HINT)
