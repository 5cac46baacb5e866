#!/usr/bin/env python
"""Train or evaluate a detectron2 Python (lazy) config with frn-det's conveniences.

    python tools/lazy_train_net.py --num-gpus 8 \
        --config-file configs/new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ_frn.py
    python tools/lazy_train_net.py --config-file CFG --num-gpus 4 --ims-per-gpu 2
    python tools/lazy_train_net.py --config-file CFG --eval-only \
        train.init_checkpoint=out/model_final.pth

Flags as detectron2's tools/lazyconfig_train_net.py (--config-file, --eval-only, --resume,
--num-gpus, --num-machines, --machine-rank, --dist-url, then key=value overrides) plus
--ims-per-gpu N. Without CUDA it runs on the CPU, with --num-gpus processes over gloo. Bad
input is reported in one paragraph, with exit status 2, before anything starts. The logic
is in frn_det.engine.lazy.
"""

from __future__ import annotations

from frn_det.engine.lazy import run

if __name__ == "__main__":
    run()
