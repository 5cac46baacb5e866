"""Every YAML under configs/ loads, builds, and holds what its comments and names claim."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    build_model,
)
from detectron2.modeling.proposal_generator import RPN_HEAD_REGISTRY
from torch import nn

import frn_det.data  # noqa: F401  (registers frn_shapes_train / frn_shapes_val)
from frn_det.checkpoint import SafeCheckpointer
from frn_det.config import add_frn_config
from frn_det.data import SHAPES_CLASSES
from frn_det.engine import apply_ims_per_gpu
from frn_det.layers import (
    TLU,
    EvoNormB0,
    EvoNormS0,
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    registered_norms,
)
from frn_det.modeling import FRN_COMPONENTS

CONFIG_ROOT = Path(__file__).resolve().parents[2] / "configs"
ALL_CONFIGS = sorted(CONFIG_ROOT.rglob("*.yaml"))
# Files a user runs; Base-*.yaml only exist to be inherited.
LEAF_CONFIGS = [p for p in ALL_CONFIGS if not p.name.startswith("Base-")]
COCO_CONFIGS = [
    p for p in LEAF_CONFIGS if p.parent.name in ("COCO-Detection", "COCO-InstanceSegmentation")
]
SCRATCH_CONFIGS = [p for p in COCO_CONFIGS if p.name.startswith("scratch_")]
IMAGENET_CONFIGS = [p for p in COCO_CONFIGS if not p.name.startswith("scratch_")]
SHAPES_CONFIGS = sorted((CONFIG_ROOT / "Shapes").glob("*.yaml"))

# file-name suffix -> the NORM value the file must use everywhere
NORMS = {"bn": "BN", "syncbn": "SyncBN", "gn": "GN", "frn": "FRN"}
# ... and of the norms that have Shapes configs only (no COCO configs)
SHAPES_ONLY_NORMS = {"evonorms0": "EvoNormS0", "evonormb0": "EvoNormB0"}
MSRA_R50 = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
FAIR_R50_GN = "catalog://ImageNetPretrained/FAIR/R-50-GN"

# ours -> detectron2's model-zoo config that ours reproduces key for key
REPRODUCTIONS = {
    "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml": "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml",
    "Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml": "Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml",
    "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml": "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_gn.yaml": "Misc/mask_rcnn_R_50_FPN_3x_gn.yaml",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_syncbn.yaml": (
        "Misc/mask_rcnn_R_50_FPN_3x_syncbn.yaml"
    ),
    "COCO-InstanceSegmentation/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml": (
        "Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml"
    ),
}

# Keys a COCO config may change relative to detectron2's stock FrozenBN 3x config of the
# same model: the norms, what the norms need (checkpoint, stride placement, frozen stages,
# a box head with convs to norm, BN statistics), and FRN's warm-up.
NORM_KEYS = {
    "MODEL.RESNETS.NORM",
    "MODEL.FPN.NORM",
    "MODEL.ROI_BOX_HEAD.NORM",
    "MODEL.ROI_MASK_HEAD.NORM",
    "MODEL.RETINANET.NORM",
    "MODEL.WEIGHTS",
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "MODEL.BACKBONE.FREEZE_AT",
    "MODEL.ROI_BOX_HEAD.NUM_CONV",
    "MODEL.ROI_BOX_HEAD.NUM_FC",
    "TEST.PRECISE_BN.ENABLED",
    "SOLVER.WARMUP_ITERS",
}


def rel(path: Path) -> str:
    return path.relative_to(CONFIG_ROOT).as_posix()


def norm_of(path: Path) -> str:
    """The norm a config's file name promises: its last ``_suffix``."""
    return {**NORMS, **SHAPES_ONLY_NORMS}[path.stem.rsplit("_", 1)[1]]


def load(path: Path | str) -> CfgNode:
    cfg = add_frn_config(get_cfg())
    cfg.merge_from_file(str(path))
    return cfg


@cache
def load_ours(name: str) -> CfgNode:
    return load(CONFIG_ROOT / name)


def flatten(node: CfgNode, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in node.items():
        if isinstance(value, CfgNode):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def as_stock(cfg: CfgNode) -> dict[str, object]:
    """``cfg`` flattened, with frn-det's component names mapped back to the stock ones they
    stand in for (they build the same modules for every norm but FRN)."""
    flat = dict(flatten(cfg))
    for key, renames in FRN_COMPONENTS.items():
        to_stock = {ours: stock for stock, ours in renames.items()}
        flat[key] = to_stock.get(flat[key], flat[key])
    return flat


def detectron2_config(name: str) -> CfgNode:
    return load(model_zoo.get_config_file(name))


def norm_sites(cfg: CfgNode) -> dict[str, str]:
    """Every config key that names a norm the model uses."""
    model = cfg.MODEL
    sites = {"RESNETS.NORM": model.RESNETS.NORM, "FPN.NORM": model.FPN.NORM}
    if model.META_ARCHITECTURE.endswith("RetinaNet"):
        sites["RETINANET.NORM"] = model.RETINANET.NORM
    else:
        sites["ROI_BOX_HEAD.NORM"] = model.ROI_BOX_HEAD.NORM
        if model.MASK_ON:
            sites["ROI_MASK_HEAD.NORM"] = model.ROI_MASK_HEAD.NORM
    return sites


def test_every_config_is_found():
    # Guards the globs: a moved folder would otherwise make the tests below pass vacuously.
    assert len(COCO_CONFIGS) == 24
    assert len(SHAPES_CONFIGS) == len(NORMS) + len(SHAPES_ONLY_NORMS)
    assert {rel(p) for p in LEAF_CONFIGS} >= set(REPRODUCTIONS)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=rel)
def test_config_loads_and_names_registered_components(path):
    cfg = load(path)
    model = cfg.MODEL
    assert model.META_ARCHITECTURE in META_ARCH_REGISTRY
    assert model.BACKBONE.NAME in BACKBONE_REGISTRY
    if model.META_ARCHITECTURE == "GeneralizedRCNN":
        assert model.RPN.HEAD_NAME in RPN_HEAD_REGISTRY
        assert model.ROI_HEADS.NAME in ROI_HEADS_REGISTRY
        assert model.ROI_BOX_HEAD.NAME in ROI_BOX_HEAD_REGISTRY
        assert model.ROI_MASK_HEAD.NAME in ROI_MASK_HEAD_REGISTRY
    for norm in [*norm_sites(cfg).values(), model.RPN.NORM]:
        assert norm in registered_norms()


def _distinct_models() -> list[Path]:
    # Misc/ files are aliases of COCO-InstanceSegmentation/ ones: build each model once.
    seen: dict[str, Path] = {}
    for path in LEAF_CONFIGS:
        model = load(path).MODEL.clone()
        model.WEIGHTS = ""
        seen.setdefault(model.dump(), path)
    return list(seen.values())


# the module types each norm name builds (SyncBN: detectron2's NaiveSyncBatchNorm on a CPU,
# and torch's SyncBatchNorm per level in RetinaNet's head)
BUILT_NORMS = {
    "BN": {nn.BatchNorm2d},
    "SyncBN": {NaiveSyncBatchNorm, nn.SyncBatchNorm},
    "GN": {nn.GroupNorm},
    "FRN": {FilterResponseNorm2d, FilterResponseNorm1d, TLU},
    "EvoNormS0": {EvoNormS0},
    "EvoNormB0": {EvoNormB0},
}
ALL_NORM_TYPES = {FrozenBatchNorm2d}.union(*BUILT_NORMS.values())


@pytest.mark.parametrize("path", _distinct_models(), ids=rel)
def test_model_builds_with_only_the_norm_its_name_promises(path):
    cfg = load(path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    built = {type(m) for m in model.modules()} & ALL_NORM_TYPES
    expected = BUILT_NORMS[norm_of(path)]
    # Stages frozen by FREEZE_AT turn BN into FrozenBN, as in stock detectron2.
    frozen = {FrozenBatchNorm2d} if cfg.MODEL.BACKBONE.FREEZE_AT > 0 else set()
    assert built & expected
    assert built <= expected | frozen, {t.__name__ for t in built}


@pytest.mark.parametrize("ours", sorted(REPRODUCTIONS))
def test_gn_and_syncbn_mask_rcnn_equal_detectron2s_key_for_key(ours):
    theirs = as_stock(detectron2_config(REPRODUCTIONS[ours]))
    mine = as_stock(load_ours(ours))
    assert mine.keys() == theirs.keys()
    assert {k: v for k, v in mine.items() if v != theirs[k]} == {}


def _stock_counterpart(path: Path) -> str:
    """detectron2's FrozenBN config of the same model and schedule."""
    folder = path.parent.name
    model = path.stem.removeprefix("scratch_").rsplit("_", 1)[0]
    return f"{folder}/{model}.yaml"


@pytest.mark.parametrize("path", COCO_CONFIGS, ids=rel)
def test_coco_config_differs_from_detectron2s_3x_only_in_norm_keys(path):
    mine = as_stock(load(path))
    stock = as_stock(detectron2_config(_stock_counterpart(path)))
    assert mine.keys() == stock.keys()
    changed = {k for k, v in mine.items() if v != stock[k]}
    assert changed <= NORM_KEYS, changed - NORM_KEYS
    if norm_of(path) != "FRN":
        assert "SOLVER.WARMUP_ITERS" not in changed


@pytest.mark.parametrize("path", [*COCO_CONFIGS, *SHAPES_CONFIGS], ids=rel)
def test_norm_in_the_file_name_is_in_every_norm_site(path):
    cfg = load(path)
    sites = norm_sites(cfg)
    assert set(sites.values()) == {norm_of(path)}, sites
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        # 4conv1fc: a box head without convs would have nowhere to put its norm.
        assert (cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (4, 1)


def test_mask_rcnn_configs_norm_all_four_places():
    for norm in NORMS:
        cfg = load_ours(f"COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_{norm}.yaml")
        assert cfg.MODEL.MASK_ON
        assert len(norm_sites(cfg)) == 4


@pytest.mark.parametrize("path", SCRATCH_CONFIGS, ids=rel)
def test_scratch_config_has_no_weights_and_freezes_nothing(path):
    cfg = load(path)
    assert cfg.MODEL.WEIGHTS == ""
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    # No checkpoint dictates where the stride goes: the 3x3 conv, as detectron2's scratch.
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False


@pytest.mark.parametrize("path", IMAGENET_CONFIGS, ids=rel)
def test_imagenet_config_starts_from_detectron2s_r50_for_its_norm(path):
    cfg = load(path)
    if norm_of(path) == "GN":
        assert (cfg.MODEL.WEIGHTS, cfg.MODEL.RESNETS.STRIDE_IN_1X1) == (FAIR_R50_GN, False)
    else:
        assert (cfg.MODEL.WEIGHTS, cfg.MODEL.RESNETS.STRIDE_IN_1X1) == (MSRA_R50, True)
    # FRN's parameters are new, so frozen stages would never train them.
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    assert freeze_at == (0 if norm_of(path) == "FRN" else 2)


def test_frn_imagenet_init_takes_convs_but_not_bn_scale_and_bias_from_the_checkpoint(tmp_path):
    cfg = load_ours("COCO-Detection/faster_rcnn_R_50_FPN_3x_frn.yaml").clone()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    # Caffe2 blob names, as in detectron2's ImageNetPretrained/MSRA/R-50.pkl.
    conv = np.random.default_rng(0).standard_normal((64, 3, 7, 7)).astype(np.float32)
    blobs = {
        "conv1_w": conv,
        "res_conv1_bn_s": np.full(64, 7.0, np.float32),
        "res_conv1_bn_b": np.full(64, 3.0, np.float32),
    }
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}))
    # The checkpointer frn_det's Trainer loads MODEL.WEIGHTS with.
    SafeCheckpointer(model).load(str(path))
    stem = model.backbone.bottom_up.stem.conv1
    assert torch.equal(stem.weight, torch.from_numpy(conv))
    assert torch.equal(stem.norm.weight, torch.ones(64))
    assert torch.equal(stem.norm.bias, torch.zeros(64))


@pytest.mark.parametrize("path", COCO_CONFIGS, ids=rel)
def test_coco_config_runs_detectron2s_3x_schedule(path):
    cfg = load(path)
    solver = cfg.SOLVER
    assert solver.MAX_ITER == 270000
    assert tuple(solver.STEPS) == (210000, 250000)
    assert solver.IMS_PER_BATCH == solver.REFERENCE_WORLD_BATCH == 16
    # detectron2 trains RetinaNet at half R-CNN's learning rate.
    base_lr = solver.BASE_LR
    assert base_lr == (0.01 if cfg.MODEL.META_ARCHITECTURE.endswith("RetinaNet") else 0.02)
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",)
    assert cfg.DATASETS.TEST == ("coco_2017_val",)


@pytest.mark.parametrize("path", COCO_CONFIGS, ids=rel)
def test_frn_coco_configs_warm_up_longer_than_the_other_norms(path):
    cfg = load(path)
    sibling = load(path.with_name(path.stem.rsplit("_", 1)[0] + "_gn.yaml"))
    if norm_of(path) == "FRN":
        assert cfg.SOLVER.WARMUP_ITERS > sibling.SOLVER.WARMUP_ITERS
    else:
        assert cfg.SOLVER.WARMUP_ITERS == sibling.SOLVER.WARMUP_ITERS


@pytest.mark.parametrize("path", [*SHAPES_CONFIGS[1:]], ids=rel)
def test_shapes_configs_differ_only_in_norm_and_precise_bn(path):
    # The same warm-up and schedule for every norm: no norm is favoured.
    first = dict(flatten(load(SHAPES_CONFIGS[0])))
    mine = dict(flatten(load(path)))
    changed = {k for k, v in mine.items() if v != first[k]}
    allowed = {f"MODEL.{site}" for site in norm_sites(load(path))} | {"TEST.PRECISE_BN.ENABLED"}
    assert changed <= allowed, changed - allowed


@pytest.mark.parametrize("path", SHAPES_CONFIGS, ids=rel)
def test_shapes_bn_configs_recompute_precise_statistics_before_evaluating(path):
    precise = load(path).TEST.PRECISE_BN.ENABLED
    assert precise is (norm_of(path) in ("BN", "SyncBN"))


@pytest.mark.parametrize("path", SHAPES_CONFIGS, ids=rel)
def test_shapes_config_trains_and_tests_on_the_embedded_dataset(path):
    cfg = load(path)
    assert cfg.DATASETS.TRAIN == ("frn_shapes_train",)
    assert cfg.DATASETS.TEST == ("frn_shapes_val",)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert num_classes == len(SHAPES_CLASSES)
    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        # Metadata only: reading it does not generate the dataset.
        thing_classes = MetadataCatalog.get(name).thing_classes
        assert num_classes == len(thing_classes)


@pytest.mark.parametrize("path", SHAPES_CONFIGS, ids=rel)
def test_shapes_config_trains_from_scratch_on_a_small_cpu(path):
    cfg = load(path)
    assert cfg.MODEL.WEIGHTS == ""
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.RESNETS.DEPTH == 18
    assert cfg.DATALOADER.NUM_WORKERS <= 1
    assert max(cfg.INPUT.MIN_SIZE_TRAIN) <= 256 and cfg.INPUT.MAX_SIZE_TEST <= 320


@pytest.mark.parametrize("path", SHAPES_CONFIGS, ids=rel)
def test_shapes_schedule_is_written_for_its_own_batch(path):
    # --ims-per-gpu rescales from REFERENCE_WORLD_BATCH; a mismatch would rescale wrongly.
    solver = load(path).SOLVER
    assert solver.IMS_PER_BATCH == solver.REFERENCE_WORLD_BATCH
    assert solver.IMS_PER_GPU == 0
    assert solver.WARMUP_ITERS < solver.STEPS[0] < solver.MAX_ITER


@pytest.mark.parametrize(("ims_per_gpu", "world_size"), [(1, 1), (2, 1), (2, 2), (4, 4)])
def test_shapes_schedule_rescales_to_other_per_gpu_batches(ims_per_gpu, world_size):
    cfg = load(SHAPES_CONFIGS[0])
    cfg.SOLVER.IMS_PER_GPU = ims_per_gpu
    written, scaled = cfg.SOLVER, apply_ims_per_gpu(cfg, world_size).SOLVER
    batch = scaled.IMS_PER_BATCH
    assert batch == ims_per_gpu * world_size
    lr, images = scaled.BASE_LR, scaled.MAX_ITER * batch
    assert lr == pytest.approx(written.BASE_LR * batch / written.IMS_PER_BATCH)
    # The same number of images seen, and the warm-up and LR drops in the same order.
    assert images == pytest.approx(written.MAX_ITER * written.IMS_PER_BATCH, rel=0.01)
    assert scaled.WARMUP_ITERS < scaled.STEPS[0] < scaled.STEPS[-1] < scaled.MAX_ITER


def test_configs_load_without_unsafe_yaml(monkeypatch):
    # detectron2 falls back to yaml.unsafe_load (arbitrary code) for its `!!python` tags;
    # ours need no such fallback.
    def refuse(*args, **kwargs):
        raise AssertionError("yaml.unsafe_load used")

    monkeypatch.setattr(yaml, "unsafe_load", refuse)
    for path in ALL_CONFIGS:
        load(path)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=rel)
def test_config_uses_frn_det_components_so_any_norm_can_be_frn(path):
    # Stock components reject "FRN"; frn-det's build stock modules for every other norm.
    cfg = load(path)
    used = ["MODEL.BACKBONE.NAME"]
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        used += ["MODEL.RPN.HEAD_NAME", "MODEL.ROI_BOX_HEAD.NAME", "MODEL.ROI_MASK_HEAD.NAME"]
    else:
        used += ["MODEL.META_ARCHITECTURE"]
    flat = dict(flatten(cfg))
    for key in used:
        assert flat[key] in FRN_COMPONENTS[key].values(), (key, flat[key])
