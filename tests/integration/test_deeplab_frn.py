"""detectron2's bundled DeepLab (V3+) with "FRN" in its NORM keys: build, train, evaluate."""

from __future__ import annotations

from detectron2.config import get_cfg
from detectron2.evaluation import SemSegEvaluator
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config

from .conftest import deeplab_resnet_options, frn_norms


def test_deeplab_v3_plus_with_frn_norms_trains_one_step_and_is_evaluated(
    registered, semseg_datasets, train_one_step, evaluate
):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    # DeepLab's R-50 (its backbone builds only bottleneck depths) at an eighth of the width.
    cfg.merge_from_list(
        [
            *deeplab_resnet_options(["res2", "res5"]),
            "MODEL.META_ARCHITECTURE", "SemanticSegmentor",
            "MODEL.SEM_SEG_HEAD.NAME", "DeepLabV3PlusHead",
            "MODEL.SEM_SEG_HEAD.NORM", "FRN",
            "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res2", "res5"],
            "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", ["res2"],
            "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS", [16],
            "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", 32,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
            "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 4,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3,
            "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 255,
            "INPUT.MIN_SIZE_TRAIN", (64,),
            "INPUT.MAX_SIZE_TRAIN", 64,
            "INPUT.MIN_SIZE_TEST", 64,
            "INPUT.MAX_SIZE_TEST", 64,
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.BASE_LR", 0.01,
            "DATALOADER.NUM_WORKERS", 0,
            "DATASETS.TRAIN", (semseg_datasets[0],),
            "DATASETS.TEST", (semseg_datasets[1],),
        ]
    )  # fmt: skip
    model = build_model(cfg)

    norms = frn_norms(model)
    assert "backbone.stem.conv1.norm" in norms  # DeepLab's own stem
    assert "backbone.res5.2.conv3.norm" in norms
    assert "sem_seg_head.decoder.res5.project_conv.convs.0.norm" in norms  # ASPP
    assert "sem_seg_head.decoder.res2.fuse_conv.0.norm" in norms
    assert not any(norm.tlu for norm in norms.values())

    losses = train_one_step(cfg, model)
    assert "loss_sem_seg" in losses

    results = evaluate(cfg, model, SemSegEvaluator(cfg.DATASETS.TEST[0], distributed=False))
    assert {"mIoU", "fwIoU", "pACC"} <= results["sem_seg"].keys()
