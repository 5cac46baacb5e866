# FRN+TLU counterpart of detectron2's new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py (from
# scratch, LSJ at 1024, batch 64, 100 COCO epochs): detectron2's file but for the norms
# (FRN+TLU where it has norm+ReLU, FRN where it has a norm alone) and FRN's warm-up.
from detectron2.config import LazyCall as L

from frn_det.engine.lazy import frn_det_counterpart, slot_norm

# detectron2's file with frn-det's components, optimizer groups and evaluator (docs/configs.md).
dataloader, lr_multiplier, train, optimizer, model = frn_det_counterpart(
    "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py"
)

# fmt: off
model.backbone.bottom_up.stem.norm = \
    model.backbone.bottom_up.stages.norm = \
    model.roi_heads.box_head.conv_norm = \
    model.roi_heads.mask_head.conv_norm = "FRN"
# fmt: on
# detectron2's FPN is stock: it takes a channels -> module norm; no activation follows it.
model.backbone.norm = L(slot_norm)(norm="FRN")
# Padding-aware norms (YAML's MODEL.PADDING_AWARE_NORM): train.padding_aware_norm=True on the
# command line, or frn_det.engine.lazy.padding_aware(model) here.

# FRN does not subtract the mean, so the paper warms up: 5x detectron2's 500 iterations.
lr_multiplier.warmup_length = 2500 / train.max_iter
