# GN counterpart of detectron2's new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py (from
# scratch, large-scale jitter at 1024, total batch 64, 100 COCO epochs). GroupNorm (32
# groups) in the ResNet, FPN, box head and mask head instead of SyncBN; everything else is
# detectron2's file, loaded from its model zoo. Parameter names are detectron2's.
from detectron2.model_zoo import get_config

from frn_det.engine.lazy import frn_det_components, frn_det_optimizer
from frn_det.evaluation import FRNCOCOEvaluator

_stock = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
dataloader = _stock.dataloader
# detectron2's COCOEvaluator with frn-det's COCOeval choice (backend "auto": faster-coco-eval
# when installed, else pycocotools; the same AP): without detectron2's compiled ops its own
# evaluator runs pycocotools' pure-Python COCOeval.
dataloader.evaluator._target_ = FRNCOCOEvaluator
lr_multiplier = _stock.lr_multiplier
train = _stock.train
optimizer = frn_det_optimizer(_stock.optimizer)
# frn-det's components build detectron2's modules for GN; any norm key can then be "FRN".
model = frn_det_components(_stock.model)

# fmt: off
model.backbone.bottom_up.stem.norm = \
    model.backbone.bottom_up.stages.norm = \
    model.backbone.norm = \
    model.roi_heads.box_head.conv_norm = \
    model.roi_heads.mask_head.conv_norm = "GN"
# fmt: on
