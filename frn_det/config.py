"""The config keys frn-det adds to detectron2's, with their defaults."""

from __future__ import annotations

from detectron2.config import CfgNode as CN


def add_frn_config(cfg: CN) -> CN:
    """Add frn-det's keys to a detectron2 config in place; returns it. Safe to call twice.

    MODEL.FRN.EPS: FRN's fixed epsilon for convolutional maps (paper: 1e-6).
    MODEL.FRN.LEARNABLE_EPS: add a learned |eps_l| (init 1e-4) to EPS in conv layers.
    MODEL.FRN.FC_LEARNABLE_EPS: the same for the (N, C) form after fully connected layers,
        where it is needed (one value per channel gives x_hat ~= sign(x) otherwise).
    MODEL.FRN.IMPL: which FRN kernel trains: "auto" (torch.compile where available, else
        the hand-written autograd function), "compiled", "autograd" or "reference".
    MODEL.FRN.AFTER_FC: what follows each fully connected layer of the box head where stock
        has a bare ReLU: "TLU" (the norm's bare activation: a per-channel TLU for FRN, the
        ReLU for every other norm) or "FRN" (FRN1d+TLU with learned eps; not in the paper).
    MODEL.PADDING_AWARE_NORM: every norm-act slot of the backbone, FPN and dense heads
        takes its statistics over each image's valid pixels and writes zeros in the
        padding, so an image's features do not depend on the batch it is padded into
        (frn_det.layers.padding). False computes what detectron2 computes.
    MODEL.RESNETS.ZERO_INIT_LAST_NORM: start the last norm's gamma of every residual
        block at 0, so each block begins as the identity.
    MODEL.RPN.NORM: norm of the RPN head's shared 3x3 conv; "" keeps detectron2's head.
    SOLVER.IMS_PER_GPU: images per GPU (process). 0 keeps IMS_PER_BATCH as written;
        otherwise IMS_PER_BATCH, BASE_LR, MAX_ITER, STEPS, WARMUP_ITERS, CHECKPOINT_PERIOD
        and TEST.EVAL_PERIOD are rescaled from SOLVER.REFERENCE_WORLD_BATCH.
    SOLVER.REFERENCE_WORLD_BATCH: the total batch the schedule in the config was written
        for (16, detectron2's model-zoo batch). detectron2's own SOLVER.REFERENCE_WORLD_SIZE
        rescales by the number of GPUs instead; the two would apply one on top of the
        other, so a config with IMS_PER_GPU > 0 and a non-zero REFERENCE_WORLD_SIZE is
        refused. With IMS_PER_GPU 0, REFERENCE_WORLD_SIZE works as in detectron2 (the batch
        a multiple of it) and REFERENCE_WORLD_BATCH is not used.
    SOLVER.AMP.PRECISION: autocast dtype when SOLVER.AMP.ENABLED: "auto" (float16 with
        gradient scaling on CUDA, bfloat16 on the CPU), "float16" or "bfloat16".
    TEST.PRECISE_BN.FINAL_ONLY: recompute the BN statistics once, after the last
        iteration, instead of before every evaluation (detectron2's); the evaluations
        during training then use the running statistics.
    TEST.PRECISE_BN.EVAL_RUNNING: after the last iteration, evaluate with the running
        statistics first (results ``running_stats/bbox/AP`` ...), so a run reports both.
    TEST.COCOEVAL_BACKEND: COCO evaluation backend: "auto" (faster-coco-eval when
        installed, else pycocotools), "faster" or "pycocotools".
    """
    model = cfg.MODEL
    if "FRN" not in model:
        model.FRN = CN()
    model.FRN.setdefault("EPS", 1e-6)
    model.FRN.setdefault("LEARNABLE_EPS", False)
    model.FRN.setdefault("FC_LEARNABLE_EPS", True)
    model.FRN.setdefault("IMPL", "auto")
    model.FRN.setdefault("AFTER_FC", "TLU")
    model.setdefault("PADDING_AWARE_NORM", False)
    model.RESNETS.setdefault("ZERO_INIT_LAST_NORM", False)
    model.RPN.setdefault("NORM", "")
    cfg.SOLVER.setdefault("IMS_PER_GPU", 0)
    cfg.SOLVER.setdefault("REFERENCE_WORLD_BATCH", 16)
    cfg.SOLVER.AMP.setdefault("PRECISION", "auto")
    cfg.TEST.PRECISE_BN.setdefault("FINAL_ONLY", False)
    cfg.TEST.PRECISE_BN.setdefault("EVAL_RUNNING", False)
    cfg.TEST.setdefault("COCOEVAL_BACKEND", "auto")
    return cfg


def frn_options(cfg: CN, fc: bool = False) -> dict[str, object]:
    """FRN's builder options from MODEL.FRN: the "FRN" registry entry's ``config_options``.

    ``eps`` and ``learnable_eps`` for ``get_norm_act`` (conv), or for ``get_fc_norm_act``
    with ``fc=True`` (MODEL.FRN.FC_LEARNABLE_EPS). Other norms get their own options from
    their entries (``frn_det.layers.norm_config_options``).
    """
    learnable = cfg.MODEL.FRN.FC_LEARNABLE_EPS if fc else cfg.MODEL.FRN.LEARNABLE_EPS
    return {"eps": cfg.MODEL.FRN.EPS, "learnable_eps": learnable}
