# GN counterpart of detectron2's new_baselines/mask_rcnn_R_50_FPN_400ep_LSJ.py: the
# 100-epoch file's model with the schedule changed as detectron2 changes it.
# ruff: noqa: F401  (a lazy config passes on the sections it imports)
from frn_det.engine.lazy import scale_schedule

from .mask_rcnn_R_50_FPN_100ep_LSJ_gn import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

scale_schedule(train, lr_multiplier, epochs=(100, 400))
