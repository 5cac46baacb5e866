"""Two CPU processes over gloo: SyncBN trains, synchronised, through frn_det.engine.launch."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm

from frn_det.engine import Trainer, backend_for_args, launch, setup

REPO = Path(__file__).resolve().parents[2]
SYNCBN_CONFIG = REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_syncbn.yaml"


def _train_and_save_norm_state(args: argparse.Namespace, out: str) -> None:
    # Runs in each spawned process (module-level so that spawn can pickle it).
    cfg = setup(args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model.module  # DistributedDataParallel on CPU
    norms = {name: m for name, m in model.named_modules() if isinstance(m, NaiveSyncBatchNorm)}
    torch.save(
        {
            "world_size": comm.get_world_size(),
            "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH,
            "iter": trainer.iter,
            "norm_types": sorted({type(m).__name__ for m in norms.values()}),
            "running_means": {name: m.running_mean.clone() for name, m in norms.items()},
        },
        Path(out) / f"rank{comm.get_rank()}.pt",
    )


@pytest.mark.skipif(not SYNCBN_CONFIG.is_file(), reason=f"{SYNCBN_CONFIG} is not there")
def test_two_gloo_processes_train_syncbn_with_batch_statistics_shared(tiny_args, tmp_path):
    args = tiny_args(
        tmp_path,
        flags=["--num-gpus", "2", "--dist-url", "auto", "--ims-per-gpu", "1"],
        # CPU processes over gloo also on a machine with GPUs; training only (evaluation
        # is tested elsewhere).
        # The config recomputes precise BN statistics after training (3 batches here): each
        # process weighs its batches by its own RoI count, and SyncedPreciseBN averages them.
        opts=["MODEL.DEVICE", "cpu", "DATASETS.TEST", "()", "TEST.PRECISE_BN.NUM_ITER", "3"],
        max_iter=2,
        config=SYNCBN_CONFIG,
    )
    assert backend_for_args(args) == "gloo"
    launch(
        _train_and_save_norm_state,
        args.num_gpus,
        dist_url=args.dist_url,
        args=(args, str(tmp_path)),
        backend=backend_for_args(args),
    )

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for state in ranks:
        assert state["world_size"] == 2
        assert state["ims_per_batch"] == 2  # --ims-per-gpu 1 on 2 processes
        assert state["iter"] == 2  # MAX_ITER: training finished
        # Stock torch SyncBatchNorm raises on CPU; the registry gives detectron2's naive one.
        assert state["norm_types"] == ["NaiveSyncBatchNorm"]
    means = [state["running_means"] for state in ranks]
    assert means[0].keys() == means[1].keys() and len(means[0]) > 10
    moved = 0
    for name in means[0]:
        # Each process saw different images; only shared statistics make these equal.
        torch.testing.assert_close(means[0][name], means[1][name], rtol=1e-5, atol=1e-6)
        moved += bool(means[0][name].abs().sum() > 0)
    assert moved == len(means[0])
    assert (tmp_path / "model_final.pth").is_file()
