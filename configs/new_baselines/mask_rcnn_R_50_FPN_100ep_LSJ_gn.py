# GN counterpart of detectron2's new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py (from
# scratch, large-scale jitter at 1024, total batch 64, 100 COCO epochs). GroupNorm (32
# groups) in the ResNet, FPN, box head and mask head instead of SyncBN; everything else is
# detectron2's file, loaded from its model zoo. Parameter names are detectron2's.
from frn_det.engine.lazy import frn_det_counterpart

# detectron2's file with frn-det's components (which build detectron2's modules for
# detectron2's norms), optimizer parameter groups (FRN's gamma, beta and tau get
# weight_decay_norm, as BN's do) and COCO evaluator; then only the norms change.
dataloader, lr_multiplier, train, optimizer, model = frn_det_counterpart(
    "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py"
)

# fmt: off
model.backbone.bottom_up.stem.norm = \
    model.backbone.bottom_up.stages.norm = \
    model.backbone.norm = \
    model.roi_heads.box_head.conv_norm = \
    model.roi_heads.mask_head.conv_norm = "GN"
# fmt: on
