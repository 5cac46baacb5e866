#!/usr/bin/env python
"""Print what configs would run, without training: batch, LR, iterations, LR drops, norms.

    python tools/show_schedule.py configs/COCO-Detection/paper_protocol/*.yaml
    python tools/show_schedule.py CFG.yaml --num-gpus 4 --ims-per-gpu 2
    python tools/show_schedule.py configs/new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ_frn.py

YAML configs are prepared as tools/train_net.py prepares them, Python (lazy) configs as
tools/lazy_train_net.py does (--ims-per-gpu rescaling for --num-gpus processes, default 8).
--opts takes the overrides (KEY VALUE or key=value) for every config; --json prints one
JSON object per config. The logic is in frn_det.engine.schedule.
"""

from __future__ import annotations

from frn_det.engine.schedule import show_schedule_main

if __name__ == "__main__":
    show_schedule_main()
