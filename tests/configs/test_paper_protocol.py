"""configs/COCO-Detection/paper_protocol/: the FRN paper's RetinaNet-from-scratch protocol.

Total batch 64, 32 and 16 for BN, SyncBN, GN and FRN; 125k x 64/batch iterations, LR
0.05 x batch/64, momentum 0.9, weight decay 4e-4; otherwise the scratch RetinaNet config
of the same norm. tools/show_schedule.py lists what each would run.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from torch import nn

from frn_det.config import add_frn_config
from frn_det.engine import apply_ims_per_gpu
from frn_det.engine.schedule import schedule_of
from frn_det.engine.schedule import show_schedule_main as show_schedule
from frn_det.layers import FilterResponseNorm2d

ROOT = Path(__file__).resolve().parents[2] / "configs" / "COCO-Detection"
FOLDER = ROOT / "paper_protocol"
BATCHES, NORMS = (64, 32, 16), ("bn", "syncbn", "gn", "frn")
NAME = {"bn": "BN", "syncbn": "SyncBN", "gn": "GN", "frn": "FRN"}
CASES = list(itertools.product(BATCHES, NORMS))
PAPER_LR_AT_64 = 0.05  # of the paper's {0.01, 0.05, 0.1}; why: the b64 files' comments
SOLVER_KEYS = (
    "IMS_PER_BATCH", "REFERENCE_WORLD_BATCH", "BASE_LR", "MAX_ITER", "STEPS", "WARMUP_ITERS",
    "CHECKPOINT_PERIOD", "MOMENTUM", "WEIGHT_DECAY",
)  # fmt: skip


def path(batch: int, norm: str) -> Path:
    return FOLDER / f"retinanet_R_50_FPN_b{batch}_{norm}.yaml"


def load(p: Path) -> CfgNode:
    cfg = add_frn_config(get_cfg())
    cfg.merge_from_file(str(p))
    return cfg


def flat(node: CfgNode, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, CfgNode):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_batch_and_norm_has_a_config():
    assert sorted(FOLDER.glob("*.yaml")) == sorted(path(b, n) for b, n in CASES)


@pytest.mark.parametrize(("batch", "norm"), CASES)
def test_schedule_is_125k_iterations_at_64_scaled_to_the_batch(batch, norm):
    solver = load(path(batch, norm)).SOLVER
    scale = 64 // batch
    assert solver.IMS_PER_BATCH == solver.REFERENCE_WORLD_BATCH == batch
    assert 125000 * 64 // batch == solver.MAX_ITER
    assert pytest.approx(PAPER_LR_AT_64 * batch / 64) == solver.BASE_LR
    assert tuple(solver.STEPS) == (110000 * scale, 120000 * scale)
    assert (solver.MOMENTUM, solver.WEIGHT_DECAY) == (0.9, 4e-4)
    # Every size counts the same number of images: 125000 x 64 of them.
    assert solver.MAX_ITER * batch == 125000 * 64
    assert solver.WARMUP_ITERS * batch == load(path(64, norm)).SOLVER.WARMUP_ITERS * 64


@pytest.mark.parametrize("norm", NORMS)
def test_warm_up_has_the_images_of_the_scratch_config_it_inherits(norm):
    scratch = load(ROOT / f"scratch_retinanet_R_50_FPN_3x_{norm}.yaml").SOLVER
    assert scratch.IMS_PER_BATCH == 16
    assert load(path(16, norm)).SOLVER.WARMUP_ITERS == scratch.WARMUP_ITERS
    assert load(path(64, norm)).SOLVER.WARMUP_ITERS * 4 == scratch.WARMUP_ITERS


@pytest.mark.parametrize(("batch", "norm"), [c for c in CASES if c[0] != 64])
def test_smaller_batches_are_the_b64_file_rescaled_by_ims_per_gpu(batch, norm):
    b64 = load(path(64, norm))
    b64.SOLVER.IMS_PER_GPU = batch // 8
    rescaled = apply_ims_per_gpu(b64, world_size=8).SOLVER
    written = load(path(batch, norm)).SOLVER
    for key in SOLVER_KEYS:
        assert written[key] == pytest.approx(rescaled[key]), key


@pytest.mark.parametrize(("batch", "norm"), CASES)
def test_config_is_its_scratch_retinanet_but_for_the_schedule(batch, norm):
    mine = flat(load(path(batch, norm)))
    scratch = flat(load(ROOT / f"scratch_retinanet_R_50_FPN_3x_{norm}.yaml"))
    changed = {k for k in mine if mine[k] != scratch[k]}
    assert mine.keys() == scratch.keys()
    assert changed <= {f"SOLVER.{k}" for k in SOLVER_KEYS}, changed
    cfg = load(path(batch, norm))
    model = cfg.MODEL
    assert (model.WEIGHTS, model.BACKBONE.FREEZE_AT) == ("", 0)
    assert model.META_ARCHITECTURE == "FRNRetinaNet"
    norms = {model.RESNETS.NORM, model.FPN.NORM, model.RETINANET.NORM}
    assert norms == {NAME[norm]}
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",)


@pytest.mark.parametrize("norm", NORMS)
def test_model_holds_the_norm_of_the_file_name(norm):
    cfg = load(path(64, norm))
    cfg.MODEL.DEVICE = "meta"  # structure only: the initialisers cost nothing
    with torch.device("meta"):
        model = build_model(cfg)
    types = {type(m) for m in model.modules()}
    expected = {
        "bn": nn.BatchNorm2d,
        "syncbn": nn.SyncBatchNorm if torch.cuda.is_available() else nn.BatchNorm2d,
        "gn": nn.GroupNorm,
        "frn": FilterResponseNorm2d,
    }[norm]
    assert any(issubclass(t, expected) for t in types)


def test_dry_run_lists_batch_lr_iterations_steps_and_norms(capsys):
    schedules = show_schedule([str(path(b, "frn")) for b in BATCHES] + ["--num-gpus", "8"])
    assert [(s.batch, s.ims_per_gpu, s.max_iter) for s in schedules] == [
        (64, 8, 125000),
        (32, 4, 250000),
        (16, 2, 500000),
    ]
    assert [s.base_lr for s in schedules] == pytest.approx([0.05, 0.025, 0.0125])
    assert schedules[2].steps == (440000, 480000)
    assert schedules[0].norms == {"RESNETS": "FRN", "FPN": "FRN", "RETINANET": "FRN"}
    assert schedules[0].epochs == pytest.approx(125000 * 64 / 118287)
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 3
    last = re.sub(" +", " ", table[-1])  # tabulate pads cells
    assert "| 16 (8x2) | 0.0125 | 500000 | 440000, 480000 | 5000 | 0.9 | 0.0004 |" in last


def test_dry_run_applies_ims_per_gpu_as_training_would():
    # The b64 file on 2 GPUs x 8 images is the b16 file.
    s = schedule_of(path(64, "gn"), num_gpus=2, ims_per_gpu=8)
    b16 = schedule_of(path(16, "gn"), num_gpus=2)
    assert (s.batch, s.base_lr, s.max_iter, s.steps, s.warmup_iters) == (
        b16.batch,
        pytest.approx(b16.base_lr),
        b16.max_iter,
        b16.steps,
        b16.warmup_iters,
    )


def test_dry_run_of_a_lazy_config_reads_its_schedule():
    lazy = Path(__file__).resolve().parents[2] / "configs" / "new_baselines"
    s = schedule_of(lazy / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py", num_gpus=8)
    assert (s.batch, s.base_lr, s.max_iter, s.steps, s.warmup_iters) == (
        64,
        0.1,
        184375,
        (163889, 177546),
        500,
    )
    assert s.norms["backbone.bottom_up.stages.norm"] == "GN"


def test_dry_run_explains_a_bad_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        show_schedule([str(path(64, "frn")), "--opts", "MODEL.RESNET.NORM", "GN"])
    assert exit_info.value.code == 2
    assert "did you mean MODEL.RESNETS.NORM?" in capsys.readouterr().err
