# FRN+TLU counterpart of detectron2's new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py
# (from scratch, large-scale jitter at 1024, total batch 64, 184375 iterations = 100 COCO
# epochs; detectron2's SyncBN model: box AP 44.6, mask AP 40.3). Everything but the norms
# and FRN's warm-up is detectron2's file, loaded from its model zoo.
#
# Norms: FRN+TLU where detectron2 has norm+ReLU (stem, block convs 1-2, box head convs, mask
# head convs), FRN without TLU where it has a norm and no ReLU (each block's last conv, the
# projection shortcuts, the FPN), a TLU after each residual addition, and FRN's form of
# the activation after the box head's fc (see frn_det.modeling.box_head).
from detectron2.config import LazyCall as L

from frn_det.engine.lazy import frn_det_counterpart, slot_norm

# detectron2's file with frn-det's components (which build detectron2's modules for
# detectron2's norms), optimizer parameter groups (FRN's gamma, beta and tau get
# weight_decay_norm, as BN's do) and COCO evaluator; then only the norms change.
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
# Padding-aware norms (MODEL.PADDING_AWARE_NORM in YAML configs): train.padding_aware_norm=True
# on the command line, or frn_det.engine.lazy.padding_aware(model) here.

# FRN does not subtract the mean and the paper recommends LR warm-up: 5x detectron2's 500
# iterations, as frn-det's YAML FRN configs lengthen theirs 5x.
lr_multiplier.warmup_length = 2500 / train.max_iter
