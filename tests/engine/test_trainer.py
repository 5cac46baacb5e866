"""The Trainer: a short FRN Mask R-CNN run on the shapes data, its evaluation, its parts."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import detectron2
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import NaiveSyncBatchNorm
from torch import nn

from frn_det.config import add_frn_config
from frn_det.engine import (
    Trainer,
    argument_parser,
    build_config,
    deterministic_inference,
    main,
    prepare_config,
    results_table,
    setup,
    use_naive_sync_batchnorm,
)
from frn_det.layers.frn import get_frn_impl

# detectron2's own Mask R-CNN base: stock backbone, whose norms come from detectron2's get_norm.
BASE_RCNN = Path(detectron2.__file__).parent / "model_zoo" / "configs" / "Base-RCNN-FPN.yaml"


def _same(a: Any, b: Any) -> bool:
    # COCO metrics are NaN where they cannot be computed (no large objects), and NaN != NaN.
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


@pytest.fixture(scope="module")
def trained(tiny_args, tmp_path_factory):
    """Train the tiny FRN Mask R-CNN for 8 iterations; its losses, results and folder."""
    output_dir = tmp_path_factory.mktemp("train")
    cfg = setup(tiny_args(output_dir, max_iter=8))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    losses = [value for value, _ in trainer.storage.history("total_loss").values()]
    return {"losses": losses, "results": results, "output_dir": output_dir, "impl": get_frn_impl()}


def test_training_loss_falls(trained):
    losses = trained["losses"]
    assert len(losses) == 8
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_training_ends_with_coco_box_and_mask_evaluation(trained):
    results = trained["results"]
    assert {"bbox", "segm"} <= results.keys()
    assert "AP" in results["bbox"] and "AP" in results["segm"]
    assert (trained["output_dir"] / "model_final.pth").is_file()


def test_training_logs_frn_tau_and_learned_eps_statistics(trained):
    lines = (trained["output_dir"] / "metrics.json").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    logged = [r for r in records if "frn/tau_mean" in r]
    assert logged and logged[-1]["iteration"] == 7  # the last iteration (8 trained)
    # no layer learns eps by default (MODEL.FRN.LEARNABLE_EPS False, a TLU after the FCs)
    assert {"frn/tau_min", "frn/tau_max"} <= logged[-1].keys()
    assert "frn/eps_mean" not in logged[-1]


def test_model_frn_impl_selects_the_frn_kernel(trained):
    assert trained["impl"] == "autograd"


def test_eval_only_of_the_checkpoint_reports_the_same_ap_as_the_end_of_training(
    trained, tiny_args, tmp_path
):
    weights = trained["output_dir"] / "model_final.pth"
    args = tiny_args(tmp_path, flags=["--eval-only"], opts=["MODEL.WEIGHTS", str(weights)])
    results = main(args)
    assert _same(results, trained["results"]), (results, trained["results"])
    # Not only the summary: every detection, box and score is the same.
    predictions = "inference/frn_shapes_val/coco_instances_results.json"
    after_training = json.loads((trained["output_dir"] / predictions).read_text())
    assert after_training, "the model predicted nothing; the comparison would be vacuous"
    assert json.loads((tmp_path / predictions).read_text()) == after_training


def test_setup_logs_the_rescaled_schedule_and_saves_it_once(tiny_args, tmp_path):
    # The tiny schedule is written for 2 images; 1 image per GPU on 1 GPU doubles it.
    cfg = setup(tiny_args(tmp_path, flags=["--ims-per-gpu", "1"], max_iter=10))
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER) == (1, 20)
    assert (
        "Rescaled the schedule from a total batch of 2 to 1" in (tmp_path / "log.txt").read_text()
    )
    # Training again from the saved config.yaml does not rescale a second time.
    again = argument_parser().parse_args(
        ["--config-file", str(tmp_path / "config.yaml"), "--ims-per-gpu", "1"]
    )
    assert build_config(again).SOLVER.MAX_ITER == 20


def _cfg():
    return add_frn_config(get_cfg())


def test_the_evaluator_of_a_coco_dataset_is_coco_with_boxes_and_masks(shapes_root, tmp_path):
    cfg = _cfg()
    cfg.MODEL.MASK_ON = True
    evaluator = Trainer.build_evaluator(cfg, "frn_shapes_val", output_folder=str(tmp_path))
    assert isinstance(evaluator, COCOEvaluator)
    assert evaluator._tasks == ("bbox", "segm")
    assert evaluator.backend in ("faster", "pycocotools")


def test_a_dataset_without_a_coco_evaluator_type_is_refused_by_name():
    MetadataCatalog.get("frn_test_semseg_only").set(evaluator_type="sem_seg")
    with pytest.raises(NotImplementedError, match=r"'frn_test_semseg_only'.*'sem_seg'.*coco"):
        Trainer.build_evaluator(_cfg(), "frn_test_semseg_only")


def test_build_model_applies_model_frn_impl(tiny_args, tmp_path):
    cfg = build_config(tiny_args(tmp_path, opts=["MODEL.FRN.IMPL", "reference"]))
    Trainer.build_model(cfg)
    assert get_frn_impl() == "reference"


def test_torch_syncbn_becomes_naive_syncbn_with_the_same_state():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.SyncBatchNorm(4)))
    net[1][0].running_mean.fill_(0.5)
    net[1][0].weight.data.fill_(2.0)
    net[1][0].bias.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert use_naive_sync_batchnorm(net) is net
    assert type(net[1][0]) is NaiveSyncBatchNorm
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key])
    assert net[1][0].weight.requires_grad and not net[1][0].bias.requires_grad


def test_a_stock_detectron2_syncbn_model_built_for_the_cpu_has_no_torch_syncbn(tmp_path):
    cfg = add_frn_config(get_cfg())
    cfg.merge_from_file(str(BASE_RCNN))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.NORM", "SyncBN"]
        + ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.BACKBONE.FREEZE_AT", "0"]
    )
    model = Trainer.build_model(cfg)
    types = {type(m) for m in model.modules()}
    assert NaiveSyncBatchNorm in types and nn.SyncBatchNorm not in types


def test_a_cpu_machine_runs_on_the_cpu_and_keeps_amp_for_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _cfg()
    cfg.SOLVER.AMP.ENABLED = True
    assert cfg.MODEL.DEVICE == "cuda"
    prepared = prepare_config(cfg, world_size=1)
    assert prepared.MODEL.DEVICE == "cpu"
    assert prepared.SOLVER.AMP.ENABLED is True
    assert cfg.MODEL.DEVICE == "cuda"  # the input is not modified
    assert prepare_config(prepared, world_size=1) is prepared


def test_deterministic_inference_turns_off_cudnn_benchmark_and_restores_it():
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
    try:
        with deterministic_inference():
            assert torch.backends.cudnn.benchmark is False
            assert torch.backends.cudnn.deterministic is True
        assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.deterministic is False
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def test_results_table_shows_box_and_mask_ap_per_dataset():
    results = {
        "coco_2017_val": {"bbox": {"AP": 41.04, "AP50": 61.2}, "segm": {"AP": 37.2, "AP50": 58.6}},
        "frn_shapes_val": {"bbox": {"AP": 12.345, "AP50": 30.0}},
    }
    lines = results_table(results).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "dataset",
        "box AP",
        "box AP50",
        "mask AP",
        "mask AP50",
    ]
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == [
        "coco_2017_val",
        "41.04",
        "61.20",
        "37.20",
        "58.60",
    ]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == [
        "frn_shapes_val",
        "12.35",
        "30.00",
        "-",
        "-",
    ]


def test_results_table_accepts_the_single_dataset_form():
    table = results_table({"bbox": {"AP": 1.0, "AP50": 2.0}, "segm": {"AP": 3.0, "AP50": 4.0}})
    assert "1.00" in table and "4.00" in table
