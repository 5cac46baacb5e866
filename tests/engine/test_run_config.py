"""The config of a run takes one path (``frn_det.engine.run_config``): every entry point
gets the config train_net trains with, and the Trainer takes it as it is."""

from __future__ import annotations

from pathlib import Path

import detectron2
import pytest
import torch

from frn_det.engine import argument_parser, build_config, prepare_config
from frn_det.engine.schedule import schedule_of

# detectron2's own: 16 images, BASE_LR 0.02, MAX_ITER 90000, STEPS (60000, 80000).
BASE_RCNN = Path(detectron2.__file__).parent / "model_zoo" / "configs" / "Base-RCNN-FPN.yaml"


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_show_schedule_shows_the_schedule_train_net_builds_typed_values_included():
    opts = ["SOLVER.MAX_ITER", "1000"]
    args = argument_parser().parse_args(
        ["--config-file", str(BASE_RCNN), "--num-gpus", "2", "--ims-per-gpu", "4", *opts]
    )
    cfg = build_config(args)
    shown = schedule_of(BASE_RCNN, opts, num_gpus=2, ims_per_gpu=4)
    # The typed MAX_ITER is kept, the rest rescaled from 16 images to 8.
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (1000, (120000, 160000))
    assert (shown.batch, shown.base_lr, shown.max_iter) == (
        cfg.SOLVER.IMS_PER_BATCH,
        cfg.SOLVER.BASE_LR,
        cfg.SOLVER.MAX_ITER,
    )


def test_the_config_of_a_run_is_prepared_once_and_reaches_the_trainer_as_it_is():
    args = argument_parser().parse_args(["--config-file", str(BASE_RCNN), "--ims-per-gpu", "2"])
    cfg = build_config(args)
    assert cfg.is_frozen() and cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.IMS_PER_BATCH == 2
    assert prepare_config(cfg, world_size=1) is cfg  # what Trainer(cfg) applies
