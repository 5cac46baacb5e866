"""SOLVER.IMS_PER_GPU: the arithmetic of rescaling a schedule to a per-GPU batch."""

from __future__ import annotations

import pytest
from detectron2.config import get_cfg

from frn_det.config import add_frn_config
from frn_det.engine import apply_ims_per_gpu, check_ims_per_gpu


def _cfg(**solver):
    cfg = add_frn_config(get_cfg())
    # detectron2's 3x schedule at its model-zoo batch.
    cfg.SOLVER.IMS_PER_BATCH = 16
    cfg.SOLVER.BASE_LR = 0.02
    cfg.SOLVER.BASE_LR_END = 0.0002
    cfg.SOLVER.MAX_ITER = 270000
    cfg.SOLVER.STEPS = (210000, 250000)
    cfg.SOLVER.WARMUP_ITERS = 1000
    cfg.SOLVER.CHECKPOINT_PERIOD = 5000
    cfg.TEST.EVAL_PERIOD = 10000
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _schedule(cfg):
    s = cfg.SOLVER
    keys = ("IMS_PER_BATCH", "BASE_LR", "BASE_LR_END", "MAX_ITER", "STEPS", "WARMUP_ITERS")
    keys += ("CHECKPOINT_PERIOD", "IMS_PER_GPU", "REFERENCE_WORLD_BATCH")
    return {**{k: s[k] for k in keys}, "EVAL_PERIOD": cfg.TEST.EVAL_PERIOD}


def test_four_images_on_one_gpu_divides_lr_by_four_and_multiplies_iterations_by_four():
    cfg = apply_ims_per_gpu(_cfg(IMS_PER_GPU=4), world_size=1)
    s = cfg.SOLVER
    assert s.IMS_PER_BATCH == 4
    assert pytest.approx(0.005) == s.BASE_LR
    assert pytest.approx(0.00005) == s.BASE_LR_END
    assert s.MAX_ITER == 1080000
    assert s.STEPS == (840000, 1000000)
    assert s.WARMUP_ITERS == 4000
    assert s.CHECKPOINT_PERIOD == 20000
    assert cfg.TEST.EVAL_PERIOD == 40000


def test_total_batch_is_images_per_gpu_times_world_size():
    cfg = apply_ims_per_gpu(_cfg(IMS_PER_GPU=2), world_size=16)
    assert cfg.SOLVER.IMS_PER_BATCH == 32
    assert pytest.approx(0.04) == cfg.SOLVER.BASE_LR
    assert cfg.SOLVER.MAX_ITER == 135000
    assert cfg.SOLVER.STEPS == (105000, 125000)


def test_number_of_epochs_and_lr_per_image_are_preserved():
    ref = _cfg()
    for ims_per_gpu, world_size in [(1, 1), (1, 3), (2, 3), (3, 5), (8, 4)]:
        cfg = apply_ims_per_gpu(_cfg(IMS_PER_GPU=ims_per_gpu), world_size)
        s = cfg.SOLVER
        images_seen = s.MAX_ITER * s.IMS_PER_BATCH
        assert images_seen == pytest.approx(ref.SOLVER.MAX_ITER * 16, rel=1e-4)
        assert pytest.approx(ref.SOLVER.BASE_LR / 16) == s.BASE_LR / s.IMS_PER_BATCH


def test_non_integral_iterations_round_half_up():
    # 3 images, scale 3/16: 10 -> 53.33 -> 53, 6 -> 32, 8 -> 42.67 -> 43, 3 -> 16, 5 -> 26.67.
    cfg = apply_ims_per_gpu(
        _cfg(IMS_PER_GPU=3, MAX_ITER=10, STEPS=(6, 8), WARMUP_ITERS=3, CHECKPOINT_PERIOD=5),
        world_size=1,
    )
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (53, (32, 43))
    assert (cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.CHECKPOINT_PERIOD) == (16, 27)
    # 32 images, scale 2: 3 -> 1.5 -> 2 (Python's round() would give 2 here but 0 for 0.5).
    cfg = apply_ims_per_gpu(_cfg(IMS_PER_GPU=32, MAX_ITER=3, STEPS=(), WARMUP_ITERS=1), 1)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS) == (2, 1)


def test_steps_stay_strictly_increasing_and_below_max_iter_when_rounding_merges_them():
    # Scale 4: 28 -> 7, 29 -> 7.25 -> 7, 30 -> 7.5 -> 8; each drop keeps its own milestone.
    cfg = apply_ims_per_gpu(_cfg(IMS_PER_GPU=64, MAX_ITER=48, STEPS=(28, 29, 30)), 1)
    assert cfg.SOLVER.MAX_ITER == 12
    assert cfg.SOLVER.STEPS == (7, 8, 9)


def test_a_schedule_too_short_to_rescale_is_refused_with_its_values():
    with pytest.raises(ValueError, match=r"SOLVER.STEPS \(2, 3\).*MAX_ITER 4"):
        apply_ims_per_gpu(_cfg(IMS_PER_GPU=64, MAX_ITER=4, STEPS=(2, 3)), world_size=1)


def test_periods_never_reach_zero_and_a_disabled_eval_period_stays_disabled():
    cfg = _cfg(IMS_PER_GPU=64, MAX_ITER=100, STEPS=(), CHECKPOINT_PERIOD=1)
    cfg.TEST.EVAL_PERIOD = 0
    cfg = apply_ims_per_gpu(cfg, world_size=4)
    assert cfg.SOLVER.CHECKPOINT_PERIOD == 1
    assert cfg.TEST.EVAL_PERIOD == 0
    assert cfg.SOLVER.MAX_ITER == 6  # 100 / 16 = 6.25


def test_applying_twice_does_not_scale_twice():
    once = apply_ims_per_gpu(_cfg(IMS_PER_GPU=4), world_size=2)
    twice = apply_ims_per_gpu(once, world_size=2)
    assert _schedule(twice) == _schedule(once)
    assert once.SOLVER.REFERENCE_WORLD_BATCH == 8


def test_a_dumped_scaled_config_reloads_without_scaling_again(tmp_path):
    once = apply_ims_per_gpu(_cfg(IMS_PER_GPU=4), world_size=2)
    path = tmp_path / "config.yaml"
    path.write_text(once.dump())
    reloaded = add_frn_config(get_cfg())
    reloaded.merge_from_file(str(path))
    assert _schedule(apply_ims_per_gpu(reloaded, world_size=2)) == _schedule(once)


def test_rescaling_for_another_world_size_starts_from_the_current_schedule():
    on_two = apply_ims_per_gpu(_cfg(IMS_PER_GPU=4), world_size=2)
    on_four = apply_ims_per_gpu(on_two, world_size=4)
    direct = apply_ims_per_gpu(_cfg(IMS_PER_GPU=4), world_size=4)
    assert _schedule(on_four) == _schedule(direct)


def test_the_input_config_is_not_modified_and_frozenness_is_kept():
    cfg = _cfg(IMS_PER_GPU=4)
    before = cfg.dump()
    cfg.freeze()
    out = apply_ims_per_gpu(cfg, world_size=1)
    assert cfg.dump() == before
    assert out.is_frozen()


def test_zero_images_per_gpu_keeps_the_config_as_written():
    cfg = _cfg(IMS_PER_GPU=0)
    assert apply_ims_per_gpu(cfg, world_size=8) is cfg


@pytest.mark.parametrize("value", [-1, 2.5, 2.0, "2", True, None])
def test_invalid_images_per_gpu_raise_value_error_naming_the_value(value):
    with pytest.raises(ValueError, match=r"integer >= 1.*" + repr(value).replace(".", r"\.")):
        apply_ims_per_gpu(_cfg(IMS_PER_GPU=value), world_size=1)


@pytest.mark.parametrize("value", [0, -3, 1.5])
def test_check_ims_per_gpu_rejects_counts_below_one_and_non_integers(value):
    with pytest.raises(ValueError, match="images per GPU"):
        check_ims_per_gpu(value)


def test_check_ims_per_gpu_accepts_positive_integers():
    assert check_ims_per_gpu(3) == 3


@pytest.mark.parametrize("world_size", [0, -1, 1.5])
def test_invalid_world_size_is_refused(world_size):
    with pytest.raises(ValueError, match="world_size"):
        apply_ims_per_gpu(_cfg(IMS_PER_GPU=2), world_size=world_size)


def test_detectron2_reference_world_size_together_with_ims_per_gpu_is_refused():
    cfg = _cfg(IMS_PER_GPU=2)
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    with pytest.raises(ValueError, match="REFERENCE_WORLD_SIZE"):
        apply_ims_per_gpu(cfg, world_size=1)


def test_unsorted_steps_are_refused():
    with pytest.raises(ValueError, match="strictly increasing"):
        apply_ims_per_gpu(_cfg(IMS_PER_GPU=2, STEPS=(250000, 210000)), world_size=1)


def test_the_schedule_is_taken_from_reference_world_batch():
    # A config whose schedule was written for 4 images (frn-det's Shapes configs).
    cfg = _cfg(IMS_PER_GPU=1, IMS_PER_BATCH=4, REFERENCE_WORLD_BATCH=4, MAX_ITER=2000)
    cfg.SOLVER.STEPS = (1500, 1800)
    out = apply_ims_per_gpu(cfg, world_size=2)
    assert out.SOLVER.IMS_PER_BATCH == 2
    assert pytest.approx(0.01) == out.SOLVER.BASE_LR
    assert (out.SOLVER.MAX_ITER, out.SOLVER.STEPS) == (4000, (3000, 3600))
