# GN counterpart of detectron2's new_baselines/mask_rcnn_R_101_FPN_50ep_LSJ.py, which
# detectron2 lacks: its R-101 100ep schedule halved, as its R-50 50ep file halves R-50's.
# ruff: noqa: F401  (a lazy config passes on the sections it imports)
from frn_det.engine.lazy import scale_schedule

from .mask_rcnn_R_101_FPN_100ep_LSJ_gn import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

scale_schedule(train, lr_multiplier, epochs=(100, 50))
