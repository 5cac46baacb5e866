"""Two gloo processes: padding-aware SyncBN, SyncBN over RoIs with an empty process, DDP."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm

from frn_det.engine import Trainer, launch, setup
from frn_det.layers import get_norm_act, padding

REPO = Path(__file__).resolve().parents[2]
SYNCBN_CONFIG = REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_syncbn.yaml"

# Rank 0 holds two padded images, rank 1 one; the union is the three on one canvas.
SIZES = {0: [(5, 6), (8, 3)], 1: [(6, 8)]}
CANVAS = (8, 8)


def _union_input() -> torch.Tensor:
    return torch.randn(3, 4, *CANVAS, generator=torch.Generator().manual_seed(0))


def _norm_layers(out: str) -> None:
    rank = comm.get_rank()
    x = _union_input()
    x = x[:2] if rank == 0 else x[2:]
    aware = get_norm_act("SyncBN", 4, act=False, padding_aware=True).norm
    aware.train()
    with padding.image_sizes(SIZES[rank], CANVAS):
        y = aware(x)
    # Per-region SyncBN: rank 0 has no RoIs at all (a mask head without foreground).
    regions = get_norm_act("SyncBN", 4, act=True, regions=True).norm
    rois = torch.randn(0 if rank == 0 else 5, 4, 3, 3, requires_grad=True)
    regions.train()
    regions(rois).sum().backward()
    torch.save(
        {
            "aware_type": type(aware).__name__,
            "aware_out": y,
            "aware_mean": aware.running_mean,
            "regions_type": type(regions).__name__,
            "regions_mode": getattr(regions, "_stats_mode", None),
            "regions_mean": regions.running_mean,
            "rois": rois.detach(),
        },
        Path(out) / f"layers{rank}.pt",
    )


def test_padding_aware_syncbn_pools_valid_pixels_of_every_process(tmp_path):
    launch(_norm_layers, 2, dist_url="auto", args=(str(tmp_path),), backend="gloo")
    ranks = [torch.load(tmp_path / f"layers{r}.pt") for r in range(2)]
    assert ranks[0]["aware_type"] == "PaddingAwareSyncBatchNorm"

    reference = get_norm_act("BN", 4, act=False, padding_aware=True).norm
    with padding.image_sizes(SIZES[0] + SIZES[1], CANVAS):
        expected = reference(_union_input())
    torch.testing.assert_close(ranks[0]["aware_out"], expected[:2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ranks[1]["aware_out"], expected[2:], rtol=1e-5, atol=1e-6)
    for state in ranks:
        torch.testing.assert_close(state["aware_mean"], reference.running_mean)

    # RoIs: an empty process does not crash the step and does not dilute the statistics.
    assert ranks[0]["regions_type"] == "NaiveSyncBatchNorm" and ranks[0]["regions_mode"] == "N"
    rois = ranks[1]["rois"]
    expected_mean = 0.1 * rois.mean(dim=(0, 2, 3))
    for state in ranks:
        torch.testing.assert_close(state["regions_mean"], expected_mean, rtol=1e-5, atol=1e-6)


def _train(args: argparse.Namespace, out: str) -> None:
    cfg = setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module
    norms = {
        n: m for n, m in model.named_modules() if isinstance(m, padding.PaddingAwareSyncBatchNorm)
    }
    heads = {
        n: m._stats_mode
        for n, m in model.named_modules()
        if n.startswith("roi_heads.") and isinstance(m, NaiveSyncBatchNorm)
    }
    torch.save(
        {
            "iter": trainer.iter,
            "heads": heads,
            "means": {n: m.running_mean.clone() for n, m in norms.items()},
        },
        Path(out) / f"rank{comm.get_rank()}.pt",
    )


def test_padding_aware_syncbn_model_trains_under_ddp_on_two_gloo_processes(tiny_args, tmp_path):
    args = tiny_args(
        tmp_path,
        flags=["--num-gpus", "2", "--dist-url", "auto", "--ims-per-gpu", "2"],
        opts=[
            "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()", "MODEL.PADDING_AWARE_NORM", "True",
            "SOLVER.REFERENCE_WORLD_BATCH", "4",  # 2 processes x 2 images: no rescaling
            "TEST.PRECISE_BN.NUM_ITER", "3",
        ],  # fmt: skip
        max_iter=2,
        config=SYNCBN_CONFIG,
    )
    launch(_train, 2, dist_url="auto", args=(args, str(tmp_path)), backend="gloo")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [state["iter"] for state in ranks] == [2, 2]
    assert ranks[0]["heads"] and set(ranks[0]["heads"].values()) == {"N"}
    means = [state["means"] for state in ranks]
    assert len(means[0]) > 10  # backbone and FPN norms are padding-aware SyncBN
    for name in means[0]:
        torch.testing.assert_close(means[0][name], means[1][name], rtol=1e-5, atol=1e-6)
