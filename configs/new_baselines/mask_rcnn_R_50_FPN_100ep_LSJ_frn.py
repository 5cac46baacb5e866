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
from detectron2.model_zoo import get_config

from frn_det.engine.lazy import frn_det_components, frn_det_optimizer, slot_norm
from frn_det.evaluation import FRNCOCOEvaluator

_stock = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader = _stock.dataloader
# detectron2's COCOEvaluator with frn-det's COCOeval choice (backend "auto": faster-coco-eval
# when installed, else pycocotools; the same AP): without detectron2's compiled ops its own
# evaluator runs pycocotools' pure-Python COCOeval.
dataloader.evaluator._target_ = FRNCOCOEvaluator
lr_multiplier = _stock.lr_multiplier
train = _stock.train
# FRN's gamma, beta and tau get weight_decay_norm (0.0), as BN's do in detectron2's file.
optimizer = frn_det_optimizer(_stock.optimizer)
# Same arguments, frn-det's slot-built stem, blocks, box head and mask head.
model = frn_det_components(_stock.model)

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
