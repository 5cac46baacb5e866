# BN counterpart of detectron2's new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py: per-GPU BN
# instead of its SyncBN in the ResNet, FPN and heads (the small-batch regime FRN is for).
from frn_det.engine.lazy import frn_det_counterpart

# detectron2's file with frn-det's components, optimizer groups and evaluator (docs/configs.md).
dataloader, lr_multiplier, train, optimizer, model = frn_det_counterpart(
    "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py"
)

# fmt: off
model.backbone.bottom_up.stem.norm = \
    model.backbone.bottom_up.stages.norm = \
    model.backbone.norm = \
    model.roi_heads.box_head.conv_norm = \
    model.roi_heads.mask_head.conv_norm = "BN"
# fmt: on
