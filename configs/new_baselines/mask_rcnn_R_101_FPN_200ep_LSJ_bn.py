# BN counterpart of detectron2's new_baselines/mask_rcnn_R_101_FPN_200ep_LSJ.py.
# ruff: noqa: F401  (a lazy config passes on the sections it imports)
from .mask_rcnn_R_101_FPN_100ep_LSJ_bn import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.max_iter *= 2  # 100ep -> 200ep

lr_multiplier.scheduler.milestones = [
    milestone * 2 for milestone in lr_multiplier.scheduler.milestones
]
lr_multiplier.scheduler.num_updates = train.max_iter
