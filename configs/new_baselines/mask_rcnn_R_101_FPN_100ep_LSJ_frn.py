# FRN+TLU counterpart of detectron2's new_baselines/mask_rcnn_R_101_FPN_100ep_LSJ.py.
# ruff: noqa: F401  (a lazy config passes on the sections it imports)
from .mask_rcnn_R_50_FPN_100ep_LSJ_frn import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

model.backbone.bottom_up.stages.depth = 101
