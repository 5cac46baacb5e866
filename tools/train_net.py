#!/usr/bin/env python
"""Train or evaluate an frn-det model with detectron2's command-line conventions.

    python tools/train_net.py --config-file configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml
    python tools/train_net.py --config-file CFG --num-gpus 8 --ims-per-gpu 2
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/model_final.pth

Flags: --config-file, --eval-only, --resume, --num-gpus, --num-machines, --machine-rank,
--dist-url, --ims-per-gpu N, then KEY VALUE config overrides. Without CUDA it runs on the
CPU, with --num-gpus processes over gloo. Bad input (an unknown key or norm, a missing
config or dataset file, a batch the processes cannot share) is reported in one paragraph,
with exit status 2, before anything starts. The logic is in frn_det.engine.
"""

from __future__ import annotations

from frn_det.engine.cli import run


def cli(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: sys.argv[1:]) and run ``main`` in every process."""
    run(argv)


if __name__ == "__main__":
    cli()
