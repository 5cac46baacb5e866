"""configs/new_baselines/: FRN, GN and BN counterparts of detectron2's LSJ baselines.

Each file instantiates; it is detectron2's config of the same name except for the norms
(and FRN's warm-up); its model keeps detectron2's parameter names wherever the norm does
not change them; and a Shapes-sized version trains a step on the CPU through
``frn_det.engine.lazy``.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.model_zoo import get_config
from detectron2.solver.build import get_default_optimizer_params
from omegaconf import OmegaConf
from torch import nn

from frn_det.checkpoint import SafeCheckpointer
from frn_det.data import SHAPES_CLASSES, register_shapes_datasets
from frn_det.data.shapes import generate_shapes_dataset
from frn_det.engine.lazy import (
    apply_lazy_ims_per_gpu,
    check_lazy_config,
    do_train,
    frn_det_components,
    lazy_train_net_argument_parser,
    lazy_train_net_main,
    load_lazy_config,
    norm_keys,
    prepare_lazy_config,
    run,
)
from frn_det.engine.trainer import NonFiniteLossError
from frn_det.engine.validation import InputError
from frn_det.evaluation import BackendCOCOEvaluator
from frn_det.layers import TLU, FilterResponseNorm2d, get_norm_act, set_frn_impl
from frn_det.solver import get_optimizer_params

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "configs" / "new_baselines"
TOOL = REPO / "tools" / "lazy_train_net.py"
DEPTHS, EPOCHS, NORMS = (50, 101), (50, 100, 200, 400), ("frn", "gn", "bn")
NAMES = [
    f"mask_rcnn_R_{d}_FPN_{e}ep_LSJ_{n}.py" for d, e, n in itertools.product(DEPTHS, EPOCHS, NORMS)
]
STOCK = {"frn": "FRN", "gn": "GN", "bn": "BN"}
# Where the README says a lazy Mask R-CNN takes its norms.
NORM_KEYS = [
    "model.backbone.bottom_up.stem.norm",
    "model.backbone.bottom_up.stages.norm",
    "model.backbone.norm",
    "model.roi_heads.box_head.conv_norm",
    "model.roi_heads.mask_head.conv_norm",
]
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def load(name: str):
    return LazyConfig.load(str(FOLDER / name))


def stock_config(name: str):
    """detectron2's config this file is the counterpart of (R-101 50ep: R-101 100ep halved,
    as detectron2 makes its R-50 50ep file)."""
    stock = name.rsplit("_", 1)[0] + ".py"
    if stock != "mask_rcnn_R_101_FPN_50ep_LSJ.py":
        return get_config(f"new_baselines/{stock}")
    cfg = get_config("new_baselines/mask_rcnn_R_101_FPN_100ep_LSJ.py")
    cfg.train.max_iter //= 2
    scheduler = cfg.lr_multiplier.scheduler
    scheduler.milestones = [m // 2 for m in scheduler.milestones]
    scheduler.num_updates = cfg.train.max_iter
    return cfg


def on_meta(cfg) -> nn.Module:
    # Structure only: weight initialisers cost nothing on the meta device.
    with torch.device("meta"):
        return instantiate(cfg.model)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def as_data(node) -> object:
    return OmegaConf.to_container(node, resolve=True)


def test_every_counterpart_is_there():
    assert sorted(p.name for p in FOLDER.glob("*.py")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_instantiates_without_weights_on_the_meta_device(name):
    cfg = load(name)
    assert cfg.train.init_checkpoint == ""
    model = on_meta(cfg)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    scheduler = instantiate(cfg.lr_multiplier)
    assert scheduler(0.0) < scheduler(0.5) == 1.0
    depth = int(re.search(r"_R_(\d+)_", name)[1])
    assert len(model.backbone.bottom_up.res4) == {50: 6, 101: 23}[depth]


@pytest.mark.parametrize("name", NAMES)
def test_config_is_detectron2s_but_for_the_norms(name):
    ours, stock = load(name), stock_config(name)
    norm = name.rsplit("_", 1)[1].removesuffix(".py")
    # frn-det's COCOEvaluator: detectron2's, with a fast COCOeval that needs no compiled ops.
    assert ours.dataloader.evaluator._target_ is BackendCOCOEvaluator
    assert stock.dataloader.evaluator._target_ is COCOEvaluator
    ours.dataloader.evaluator._target_ = COCOEvaluator
    assert as_data(ours.dataloader) == as_data(stock.dataloader)
    assert as_data(ours.train) == as_data(stock.train)
    # The same SGD; frn-det's parameter groups count FRN's parameters as norm parameters.
    params = (ours.optimizer.params._target_, stock.optimizer.params._target_)
    assert params == (get_optimizer_params, get_default_optimizer_params)
    assert as_data(ours.optimizer) == as_data(stock.optimizer) | {
        "params": as_data(stock.optimizer.params) | {"_target_": get_optimizer_params}
    }
    mine_lr, stock_lr = as_data(ours.lr_multiplier), as_data(stock.lr_multiplier)
    warmup = mine_lr.pop("warmup_length"), stock_lr.pop("warmup_length")
    assert mine_lr == stock_lr
    # FRN warms up 5x longer (as frn-det's YAML FRN configs); the others as detectron2.
    assert warmup[0] == pytest.approx(warmup[1] * (5 if norm == "frn" else 1))
    assert dict(norm_keys(ours)).keys() == set(NORM_KEYS)


@pytest.mark.parametrize("norm", NORMS)
def test_norm_keys_hold_the_norm_of_the_file_name(norm):
    cfg = load(f"mask_rcnn_R_50_FPN_100ep_LSJ_{norm}.py")
    values = dict(norm_keys(cfg))
    for key in NORM_KEYS:
        value = values[key]
        if key == "model.backbone.norm" and norm == "frn":
            # stock FPN: the slot's norm half (FRN without TLU) as a channels -> module factory
            assert value.norm == "FRN"
        else:
            assert value == STOCK[norm], key


def _stock_models() -> dict[int, nn.Module]:
    return {
        depth: on_meta(get_config(f"new_baselines/mask_rcnn_R_{depth}_FPN_100ep_LSJ.py"))
        for depth in DEPTHS
    }


@pytest.fixture(scope="module")
def stock_models() -> dict[int, nn.Module]:
    return _stock_models()


def _norm_modules(model: nn.Module) -> dict[str, type]:
    norm_types = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, FilterResponseNorm2d, TLU)
    return {n: type(m) for n, m in model.named_modules() if isinstance(m, norm_types)}


@pytest.mark.parametrize("depth", DEPTHS)
def test_frn_det_components_build_detectron2s_syncbn_model_module_for_module(depth, stock_models):
    # detectron2's own SyncBN baseline through frn-det's slot-built components
    cfg = get_config(f"new_baselines/mask_rcnn_R_{depth}_FPN_100ep_LSJ.py")
    frn_det_components(cfg.model)
    stock, ours = stock_models[depth], on_meta(cfg)
    assert shapes(ours) == shapes(stock)
    # frn-det's stem and stages take SyncBN from the registry: torch's on CUDA, detectron2's
    # naive one elsewhere (torch's raises on CPU tensors; build_lazy_model swaps the stock
    # FPN's too). The heads keep the config's own NaiveSyncBatchNorm(stats_mode="N").
    sync_bn = type(get_norm_act("SyncBN", 8).norm)
    expected = {
        name: sync_bn if kind is nn.SyncBatchNorm and name.startswith("backbone.bottom_up.")
        else kind
        for name, kind in _norm_modules(stock).items()
    }
    assert _norm_modules(ours) == expected


@pytest.mark.parametrize("depth", DEPTHS)
def test_bn_counterpart_has_detectron2s_state_dict_key_for_key(depth, stock_models):
    stock = stock_models[depth]
    ours = on_meta(load(f"mask_rcnn_R_{depth}_FPN_100ep_LSJ_bn.py"))
    assert shapes(ours) == shapes(stock)
    # The same norm sites, holding per-GPU BN where detectron2 has SyncBN / naive SyncBN.
    stock_norms, our_norms = _norm_modules(stock), _norm_modules(ours)
    assert stock_norms.keys() == our_norms.keys()
    assert set(stock_norms.values()) == {nn.SyncBatchNorm, NaiveSyncBatchNorm}
    assert set(our_norms.values()) == {nn.BatchNorm2d}


@pytest.mark.parametrize("depth", DEPTHS)
def test_gn_counterpart_has_detectron2s_parameters_and_no_bn_statistics(depth, stock_models):
    stock = stock_models[depth]
    ours = on_meta(load(f"mask_rcnn_R_{depth}_FPN_100ep_LSJ_gn.py"))
    expected = {k: v for k, v in shapes(stock).items() if not k.endswith(BN_BUFFERS)}
    assert shapes(ours) == expected
    assert _norm_modules(ours).keys() == _norm_modules(stock).keys()
    assert set(_norm_modules(ours).values()) == {nn.GroupNorm}


# FRN adds a threshold tau to each norm, a TLU after each residual addition and FRN's form
# of the activation after the box head's fc (a TLU, or an (N, C) FRN+TLU with learned eps);
# it has no running statistics.
FRN_EXTRA = re.compile(
    r"(.*\.norm\.tau|backbone\.bottom_up\.res\d\.\d+\.activation\.tau"
    r"|roi_heads\.box_head\.(fc_relu1\.tau|fc_norm1\.(weight|bias|tau|learned_eps)))$"
)


@pytest.mark.parametrize("depth", DEPTHS)
def test_frn_counterpart_keeps_detectron2s_names_where_frn_does_not_differ(depth, stock_models):
    stock = {k: v for k, v in shapes(stock_models[depth]).items() if not k.endswith(BN_BUFFERS)}
    ours = shapes(on_meta(load(f"mask_rcnn_R_{depth}_FPN_100ep_LSJ_frn.py")))
    # Every conv, fc, norm scale and bias of detectron2's model, with its shape.
    assert {k: ours.get(k) for k in stock} == stock
    extra = sorted(set(ours) - set(stock))
    assert [k for k in extra if not FRN_EXTRA.match(k)] == []
    blocks = {"50": 16, "101": 33}[str(depth)]
    assert sum(k.endswith(".activation.tau") for k in extra) == blocks


@pytest.mark.parametrize("name", NAMES)
def test_config_passes_the_lazy_entry_points_checks(name, monkeypatch):
    cfg = load_lazy_config(FOLDER / name)
    # Datasets (COCO) and shapely are not here; the norms and the batch are checked.
    monkeypatch.setattr("frn_det.engine.lazy.check_datasets", lambda *a, **k: None)
    monkeypatch.setattr("frn_det.engine.lazy._check_crop_dependencies", lambda cfg: None)
    check_lazy_config(cfg, world_size=8)


def test_lsj_crop_of_polygon_masks_without_shapely_is_explained(monkeypatch):
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_frn.py")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "shapely" else find_spec(name, *a),
    )
    with pytest.raises(
        InputError, match=r"FixedSizeCrop\) the polygon masks .*pip install shapely"
    ):
        check_lazy_config(cfg, world_size=8)


def test_ims_per_gpu_rescales_the_lsj_schedule_from_its_batch_of_64():
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_frn.py")
    warmup = cfg.lr_multiplier.warmup_length
    cfg.train.ims_per_gpu = 2
    apply_lazy_ims_per_gpu(cfg, world_size=8)  # 16 images: a quarter of 64
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.optimizer.lr == pytest.approx(0.1 / 4)
    assert cfg.train.max_iter == 184375 * 4
    assert list(cfg.lr_multiplier.scheduler.milestones) == [163889 * 4, 177546 * 4]
    assert cfg.lr_multiplier.scheduler.num_updates == cfg.train.max_iter
    assert cfg.train.checkpointer.period == 5000 * 4
    assert cfg.train.reference_world_batch == 16
    assert cfg.lr_multiplier.warmup_length == warmup  # a fraction: 4x the iterations
    # Applying it again for the same processes changes nothing.
    before = OmegaConf.to_yaml(cfg)
    apply_lazy_ims_per_gpu(cfg, world_size=8)
    assert OmegaConf.to_yaml(cfg) == before


def test_the_readme_overrides_turn_the_gn_model_into_the_frn_model():
    frn = "{_target_:frn_det.engine.lazy.slot_norm,norm:FRN}"
    overrides = [f"{key}={frn if key == 'model.backbone.norm' else 'FRN'}" for key in NORM_KEYS]
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py", overrides)
    assert shapes(on_meta(cfg)) == shapes(on_meta(load("mask_rcnn_R_50_FPN_100ep_LSJ_frn.py")))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.backbone.bottom_up.norm=GN"], "did you mean model.backbone.bottom_up.stem.norm"),
        (["model.backbone.bottom_up.norm=GN"], "model.roi_heads.mask_head.conv_norm"),
        (["optimizer.lr", "0.01"], "overrides are key=value"),
    ],
)
def test_bad_overrides_are_explained(overrides, message):
    with pytest.raises(InputError, match=re.escape(message)):
        load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py", overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.backbone.bottom_up.stages.norm=frn", "did you mean 'FRN'?"),
        # Stock FPN cannot build FRN by name: the message names the factory that can.
        ("model.backbone.norm=FRN", "L(frn_det.engine.lazy.slot_norm)(norm='FRN')"),
    ],
)
def test_norms_a_component_cannot_build_are_explained(override, message, monkeypatch):
    monkeypatch.setattr("frn_det.engine.lazy.check_datasets", lambda *a, **k: None)
    monkeypatch.setattr("frn_det.engine.lazy._check_crop_dependencies", lambda cfg: None)
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py", [override])
    with pytest.raises(InputError, match=re.escape(message)):
        check_lazy_config(cfg, world_size=1)


def test_a_batch_the_processes_cannot_share_is_explained(monkeypatch):
    monkeypatch.setattr("frn_det.engine.lazy.check_datasets", lambda *a, **k: None)
    monkeypatch.setattr("frn_det.engine.lazy._check_crop_dependencies", lambda cfg: None)
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py")
    with pytest.raises(InputError, match="dataloader.train.total_batch_size is 64, which 3"):
        check_lazy_config(cfg, world_size=3)


def test_a_missing_config_file_is_explained(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_lazy_config(tmp_path / "nope.py")


@pytest.fixture
def shapes_root(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("datasets")
    generate_shapes_dataset(root, num_train=4, num_val=2, seed=0)
    register_shapes_datasets(root)
    yield root
    register_shapes_datasets()
    set_frn_impl(None)


def shapes_sized(cfg, output_dir: Path):
    """The FRN LSJ Mask R-CNN shrunk to the embedded dataset: R-18, 128-pixel scale jitter,
    narrow heads, 2 images, 3 iterations (both LR drops), fp32, eager FRN kernels."""
    model = cfg.model
    model.backbone.bottom_up.stages.depth = 18
    model.roi_heads.num_classes = len(SHAPES_CLASSES)
    model.roi_heads.batch_size_per_image = 32
    model.proposal_generator.post_nms_topk = (64, 32)
    model.roi_heads.box_head.conv_dims = [32]
    model.roi_heads.box_head.fc_dims = [64]
    model.roi_heads.box_predictor.input_shape.channels = 64
    model.roi_heads.mask_head.conv_dims = [32, 32]
    train_loader = cfg.dataloader.train
    train_loader.dataset.names = "frn_shapes_train"
    train_loader.total_batch_size = 2
    train_loader.num_workers = 0
    # LSJ's scale jitter at 128 pixels, without its FixedSizeCrop: cropping polygon masks
    # needs shapely, which this environment does not install (check_lazy_config says so).
    resize, _crop, flip = train_loader.mapper.augmentations
    resize.target_height = resize.target_width = 128
    resize.max_scale = 1.0
    train_loader.mapper.augmentations = [resize, flip]
    cfg.dataloader.test.dataset.names = "frn_shapes_val"
    cfg.dataloader.test.num_workers = 0
    cfg.dataloader.test.mapper.augmentations[0].short_edge_length = 128
    cfg.dataloader.test.mapper.augmentations[0].max_size = 160
    cfg.dataloader.evaluator._target_ = "frn_det.evaluation.BackendCOCOEvaluator"
    cfg.dataloader.evaluator.output_dir = str(output_dir / "inference")
    train = cfg.train
    train.max_iter = 3
    train.amp.enabled = False
    train.frn_impl = "autograd"
    train.output_dir = str(output_dir)
    train.checkpointer.period = 2
    train.eval_period = 0
    train.device = "cpu"
    cfg.lr_multiplier.scheduler.milestones = [1, 2]
    cfg.lr_multiplier.scheduler.num_updates = 3
    cfg.optimizer.lr = 0.01
    return cfg


def test_a_shapes_sized_frn_lsj_config_trains_and_evaluates_on_the_cpu(shapes_root, tmp_path):
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_frn.py")
    cfg = prepare_lazy_config(shapes_sized(cfg, tmp_path / "out"), world_size=1)
    results = do_train(cfg)
    assert set(results) == {"bbox", "segm"}

    out = tmp_path / "out"
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert {p.name for p in out.glob("model_*.pth")} == {"model_0000001.pth", "model_final.pth"}
    model = instantiate(cfg.model)
    checkpoint = SafeCheckpointer(model).load(str(out / "model_final.pth"))
    assert checkpoint["iteration"] == 2
    taus = [m.tau for m in model.modules() if isinstance(m, FilterResponseNorm2d) and m.tlu]
    assert taus and any(bool((tau != 0).any()) for tau in taus)  # the TLU thresholds trained

    # --eval-only on the checkpoint reports what the end of training reported.
    config = tmp_path / "config.yaml"
    LazyConfig.save(cfg, str(config))
    checkpoint = f"train.init_checkpoint={out / 'model_final.pth'}"
    argv = ["--config-file", str(config), "--eval-only", checkpoint]
    evaluated = lazy_train_net_main(lazy_train_net_argument_parser().parse_args(argv))
    assert evaluated["bbox"] == pytest.approx(results["bbox"], nan_ok=True)
    assert evaluated["segm"] == pytest.approx(results["segm"], nan_ok=True)


def test_a_killed_lazy_run_resumes_from_its_newest_complete_checkpoint(shapes_root, tmp_path):
    out = tmp_path / "out"
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py")
    cfg = prepare_lazy_config(shapes_sized(cfg, out), world_size=1)
    cfg.train.eval_period = 0
    do_train(cfg)
    # As if killed after the checkpoint of iteration 1, mid-way through a metrics line.
    (out / "model_final.pth").unlink()
    (out / "last_checkpoint").write_text("model_0000001.pth")
    with (out / "metrics.json").open("a") as f:
        f.write('{"iteration": 2, "total_lo')

    do_train(cfg, resume=True)
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    iterations = [line["iteration"] for line in lines if "total_loss" in line]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 2
    superseded = (out / "metrics.superseded.json").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in superseded if "total_loss" in line] == [2]


def test_two_cpu_processes_train_a_syncbn_lazy_config_over_gloo(tmp_path):
    # Another process reads the config: written as a YAML lazy config, as detectron2 saves one.
    root = tmp_path / "datasets"
    generate_shapes_dataset(root, num_train=4, num_val=2, seed=0)
    out = tmp_path / "out"
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_bn.py")
    cfg = shapes_sized(cfg, out)
    model = cfg.model
    model.backbone.bottom_up.stem.norm = model.backbone.bottom_up.stages.norm = "SyncBN"
    model.backbone.norm = "SyncBN"
    # As detectron2's SyncBN baseline: heads may see no RoIs on one process.
    model.roi_heads.box_head.conv_norm = model.roi_heads.mask_head.conv_norm = "naiveSyncBN_N"
    config = tmp_path / "config.yaml"
    LazyConfig.save(cfg, str(config))

    env = {**os.environ, "DETECTRON2_DATASETS": str(root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(TOOL), "--config-file", str(config), "--num-gpus", "2"]
    command += ["--ims-per-gpu", "1", "--dist-url", "auto"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = LazyConfig.load(str(out / "config.yaml"))
    assert saved.dataloader.train.total_batch_size == 2  # 1 image x 2 processes
    assert saved.train.device == "cpu"
    checkpoint = torch.load(out / "model_final.pth", weights_only=True)
    assert checkpoint["iteration"] == 2
    assert any(k.endswith("res2.0.conv1.norm.running_var") for k in checkpoint["model"])


def test_a_diverging_lazy_run_stops_naming_the_lazy_keys_to_change(shapes_root, tmp_path):
    out = tmp_path / "out"
    cfg = load_lazy_config(FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py")
    cfg = prepare_lazy_config(shapes_sized(cfg, out), world_size=1)
    cfg.optimizer.lr = 1e30
    cfg.lr_multiplier.warmup_factor = 1.0
    with pytest.raises(NonFiniteLossError, match=r"Lower optimizer\.lr \(now 1e\+30\)") as info:
        do_train(cfg)
    assert "lr_multiplier.warmup_length" in str(info.value)
    assert not list(out.glob("model_*.pth"))  # nothing saved from the diverged model


def test_the_command_line_explains_bad_input_in_one_paragraph_with_status_2(capsys):
    config = FOLDER / "mask_rcnn_R_50_FPN_100ep_LSJ_gn.py"
    with pytest.raises(SystemExit) as exit_info:
        run(["--config-file", str(config), "model.backbone.bottom_up.norm=GN"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: config key model.backbone.bottom_up.norm (in the key=value" in err
