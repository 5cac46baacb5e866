# BN counterpart of detectron2's new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py.
# ruff: noqa: F401  (a lazy config passes on the sections it imports)
from frn_det.engine.lazy import scale_schedule

from .mask_rcnn_R_101_FPN_100ep_LSJ_bn import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

scale_schedule(train, lr_multiplier, epochs=(100, 400))
