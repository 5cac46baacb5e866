"""The fixed-batch design's premise: a step's images do not depend on how they are split.

With aspect-ratio grouping off, 2 gloo processes of 2 images and 1 process of 4 images
draw the same 4 images at each step (detectron2's sampler: one permutation from a seed
shared from rank 0, process r taking every W-th index), which the sweep's --total-batch
relies on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from detectron2.utils import comm

from frn_det.engine import Trainer, launch, setup

STEPS = 3


def _record_steps(args: argparse.Namespace, out: str) -> None:
    cfg = setup(args)
    batches = iter(Trainer.build_train_loader(cfg))
    steps = [sorted(Path(d["file_name"]).name for d in next(batches)) for _ in range(STEPS)]
    torch.save(steps, Path(out) / f"steps{comm.get_world_size()}_{comm.get_rank()}.pt")


def test_a_steps_images_are_the_same_for_one_and_for_two_processes(tiny_args, tmp_path):
    opts = ["MODEL.DEVICE", "cpu", "DATALOADER.ASPECT_RATIO_GROUPING", "False"]
    opts += ["SOLVER.REFERENCE_WORLD_BATCH", "4"]
    one = tiny_args(tmp_path / "one", flags=["--ims-per-gpu", "4"], opts=opts)
    _record_steps(one, str(tmp_path))
    two = tiny_args(
        tmp_path / "two",
        flags=["--num-gpus", "2", "--dist-url", "auto", "--ims-per-gpu", "2"],
        opts=opts,
    )
    launch(_record_steps, 2, dist_url="auto", args=(two, str(tmp_path)), backend="gloo")
    alone = torch.load(tmp_path / "steps1_0.pt")
    ranks = [torch.load(tmp_path / f"steps2_{r}.pt") for r in range(2)]
    for step in range(STEPS):
        assert len(alone[step]) == 4 and all(len(r[step]) == 2 for r in ranks)
        assert sorted(ranks[0][step] + ranks[1][step]) == alone[step], step
    # and the steps differ from each other: the comparison is not vacuous
    assert len({tuple(s) for s in alone}) == STEPS
