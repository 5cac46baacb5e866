from pathlib import Path

import pytest

from frn_det.data import register_shapes_datasets
from frn_det.data.shapes import generate_shapes_dataset

TINY = {"num_train": 8, "num_val": 4, "seed": 0}


@pytest.fixture(autouse=True)
def default_registration():
    """Tests point the frn_shapes names at their own folders; put them back afterwards."""
    yield
    register_shapes_datasets()


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A datasets root holding an 8 train / 4 val image shapes dataset."""
    generate_shapes_dataset(tmp_path, **TINY)
    return tmp_path
