"""detectron2's bundled PointRend with "FRN" in its stock NORM keys: build, train, evaluate."""

from __future__ import annotations

import detectron2
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import SemSegEvaluator
from detectron2.modeling import build_model
from detectron2.projects.point_rend import add_pointrend_config

from frn_det.config import add_frn_config
from frn_det.evaluation import BackendCOCOEvaluator
from frn_det.modeling import use_frn_components

from .conftest import frn_norms

BASE_RCNN_FPN = detectron2.__file__.replace("__init__.py", "model_zoo/configs/Base-RCNN-FPN.yaml")

# An R-18 FPN at 96-128 px with narrow heads: a training step in about a second on a CPU.
TINY_RCNN = [
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.BACKBONE.FREEZE_AT", 0,
    "MODEL.FPN.OUT_CHANNELS", 32,
    "INPUT.MIN_SIZE_TRAIN", (96,),
    "INPUT.MAX_SIZE_TRAIN", 128,
    "INPUT.MIN_SIZE_TEST", 96,
    "INPUT.MAX_SIZE_TEST", 128,
    "SOLVER.IMS_PER_BATCH", 2,
    "SOLVER.BASE_LR", 0.01,
    "DATALOADER.NUM_WORKERS", 0,
]  # fmt: skip


def _point_rend_rcnn_cfg(train: str, val: str) -> CfgNode:
    """PointRend Mask R-CNN as the project's Base-PointRend-RCNN-FPN.yaml sets it up, with
    "FRN" in every NORM key a stock component of it reads."""
    cfg = get_cfg()
    add_pointrend_config(cfg)
    cfg.merge_from_file(BASE_RCNN_FPN)
    cfg.merge_from_list(TINY_RCNN)
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.RESNETS.NORM = "FRN"
    cfg.MODEL.FPN.NORM = "FRN"
    cfg.MODEL.ROI_BOX_HEAD.NORM = "FRN"
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = True
    cfg.MODEL.ROI_HEADS.NAME = "PointRendROIHeads"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 4
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # an untrained model still predicts
    cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE = 10
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 100
    # PointRend's coarse mask head is convs without a norm and FCs: ROI_MASK_HEAD.NORM is
    # not read by it.
    cfg.MODEL.ROI_MASK_HEAD.NAME = "PointRendMaskHead"
    cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE = ""
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON = True
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = 4
    cfg.MODEL.POINT_HEAD.FC_DIM = 32
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 2
    cfg.INPUT.MASK_FORMAT = "bitmask"  # PointRend's point sampling needs bitmasks
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = (val,)
    return cfg


def test_point_rend_mask_rcnn_with_frn_norms_trains_one_step_and_is_evaluated(
    registered, shapes_datasets, train_one_step, evaluate
):
    cfg = _point_rend_rcnn_cfg(*shapes_datasets)
    model = build_model(cfg)

    norms = frn_norms(model)
    assert "backbone.bottom_up.stem.conv1.norm" in norms
    assert "backbone.fpn_lateral2.norm" in norms and "backbone.fpn_output5.norm" in norms
    assert "roi_heads.box_head.conv1.norm" in norms
    # Stock components add their own ReLU: FRN without TLU there.
    assert not any(norm.tlu for norm in norms.values())

    losses = train_one_step(cfg, model)
    assert {"loss_mask", "loss_mask_point", "loss_cls"} <= losses.keys()

    evaluator = BackendCOCOEvaluator(
        cfg.DATASETS.TEST[0], tasks=("bbox", "segm"), distributed=False
    )
    results = evaluate(cfg, model, evaluator)
    assert "AP" in results["bbox"] and "AP" in results["segm"]

    # The evaluation saw real instances with masks from PointRend's subdivision inference.
    image = next(iter(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])))[0]
    model.eval()  # inference_on_dataset puts the model back in training mode
    with torch.no_grad():
        instances = model([image])[0]["instances"]
    assert len(instances) > 0
    assert instances.pred_masks.shape[1:] == (image["height"], image["width"])


def test_point_rend_semantic_segmentation_with_an_frn_sem_seg_head_trains_and_is_evaluated(
    registered, semseg_datasets, train_one_step, evaluate
):
    cfg = get_cfg()
    add_pointrend_config(cfg)
    cfg.merge_from_file(BASE_RCNN_FPN)
    cfg.merge_from_list(TINY_RCNN)
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.RESNETS.NORM = "FRN"
    cfg.MODEL.FPN.NORM = "FRN"
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PointRendSemSegHead"
    cfg.MODEL.SEM_SEG_HEAD.NORM = "FRN"  # read by the coarse head, stock SemSegFPNHead
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = 3
    cfg.MODEL.POINT_HEAD.FC_DIM = 32
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 256
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 2
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 256
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.MIN_SIZE_TEST = cfg.INPUT.MAX_SIZE_TEST = 64
    cfg.DATASETS.TRAIN = (semseg_datasets[0],)
    cfg.DATASETS.TEST = (semseg_datasets[1],)
    model = build_model(cfg)

    norms = frn_norms(model)
    assert "sem_seg_head.coarse_sem_seg_head.p2.0.norm" in norms
    assert not any(norm.tlu for norm in norms.values())

    losses = train_one_step(cfg, model)
    assert {"loss_sem_seg", "loss_sem_seg_point"} <= losses.keys()

    results = evaluate(cfg, model, SemSegEvaluator(cfg.DATASETS.TEST[0], distributed=False))
    assert "mIoU" in results["sem_seg"]


def test_point_rend_with_frn_aware_components_gets_frn_tlu_in_backbone_and_box_head(
    registered, shapes_datasets, train_one_step
):
    cfg = _point_rend_rcnn_cfg(*shapes_datasets)
    use_frn_components(add_frn_config(cfg))
    model = build_model(cfg)

    norms = frn_norms(model)
    # frn-det's ResNet and box head fuse the ReLU they replace into FRN+TLU ...
    assert norms["backbone.bottom_up.stem.conv1.norm"].tlu
    assert norms["roi_heads.box_head.conv1.norm"].tlu
    # ... and keep FRN without TLU where stock detectron2 has no activation after the norm.
    assert not norms["backbone.fpn_lateral2.norm"].tlu

    losses = train_one_step(cfg, model)
    assert {"loss_mask", "loss_mask_point"} <= losses.keys()
