"""Fixtures for the engine tests: a tiny shapes dataset and a tiny Mask R-CNN command line."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from frn_det.data import register_shapes_datasets
from frn_det.data.shapes import generate_shapes_dataset
from frn_det.engine import argument_parser
from frn_det.layers import set_frn_impl

REPO = Path(__file__).resolve().parents[2]
SHAPES_CONFIG = REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_frn.yaml"

# The Shapes R-18 FRN Mask R-CNN made small enough for a few CPU iterations a second:
# smaller images, half the head widths, fewer RoIs, eager FRN kernels (torch.compile
# would spend longer compiling than the test trains).
TINY_OPTS = [
    "MODEL.FRN.IMPL", "autograd",
    "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM", "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    # Keep every detection so the evaluation compares real predictions, not empty lists.
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "128",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.REFERENCE_WORLD_BATCH", "2",
    "SOLVER.BASE_LR", "0.01",
    "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "2",
    "DATALOADER.NUM_WORKERS", "0",
    "SEED", "1",
]  # fmt: skip


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A shapes dataset of 8 train and 4 val images, registered as frn_shapes_train/val here
    and, through DETECTRON2_DATASETS, in processes the tests spawn."""
    root = tmp_path_factory.mktemp("datasets")
    generate_shapes_dataset(root, num_train=8, num_val=4, seed=0)
    previous = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = os.fspath(root)
    register_shapes_datasets(root)
    yield root
    if previous is None:
        del os.environ["DETECTRON2_DATASETS"]
    else:
        os.environ["DETECTRON2_DATASETS"] = previous
    register_shapes_datasets()


@pytest.fixture(scope="module", autouse=True)
def _restore_frn_det_logger() -> Iterator[None]:
    # frn_det.engine.setup gives the "frn_det" logger handlers and stops its propagation,
    # as detectron2 does for its own; tests elsewhere may rely on caplog seeing it.
    logger = logging.getLogger("frn_det")
    saved = logger.handlers[:], logger.propagate, logger.level
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


@pytest.fixture(autouse=True)
def _restore_frn_impl() -> Iterator[None]:
    # Trainer.build_model sets the process-wide FRN kernel from MODEL.FRN.IMPL.
    yield
    set_frn_impl(None)


@pytest.fixture(scope="session")
def tiny_args(shapes_root: Path) -> Callable[..., argparse.Namespace]:
    """``tiny_args(output_dir, flags=(), opts=(), max_iter=10, config=SHAPES_CONFIG)``: parsed
    train_net arguments for the tiny model on the tiny dataset; ``opts`` (KEY VALUE) override
    TINY_OPTS."""

    def make(
        output_dir: Path,
        flags: Sequence[str] = (),
        opts: Sequence[str] = (),
        max_iter: int = 10,
        config: Path = SHAPES_CONFIG,
    ) -> argparse.Namespace:
        return argument_parser().parse_args(
            ["--config-file", os.fspath(config), *flags, *TINY_OPTS]
            + ["SOLVER.MAX_ITER", str(max_iter), "OUTPUT_DIR", os.fspath(output_dir), *opts]
        )

    return make
