"""Padding-aware layers: each image's output is the one it gets alone, whatever the batch."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from frn_det.layers import (
    FilterResponseNorm2d,
    PaddingAwareFilterResponseNorm2d,
    PaddingAwareTLU,
    frn_impl,
    get_activation,
    get_norm_act,
    padding,
    register_norm,
    unregister_norm,
)
from frn_det.layers.frn import filter_response_norm, frn_reference

IMPLS = ["reference", "autograd", "compiled"]
SIZES = [(5, 7), (8, 8), (3, 8)]  # valid (h, w) of three images on an 8 x 8 canvas
CANVAS = (8, 8)


def _padded(channels: int = 6, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(len(SIZES), channels, *CANVAS, dtype=dtype)
    # What a conv leaves in the padding: anything. The layers must ignore it.
    return x * 3 + 1


def _mask() -> torch.Tensor:
    mask = torch.zeros(len(SIZES), 1, *CANVAS, dtype=torch.bool)
    for i, (h, w) in enumerate(SIZES):
        mask[i, :, :h, :w] = True
    return mask


def _alone(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """module on each image's valid crop, as if it were the only image."""
    return [module(x[i : i + 1, :, :h, :w])[0] for i, (h, w) in enumerate(SIZES)]


def _assert_matches_alone(batched: torch.Tensor, alone: list[torch.Tensor], tol=1e-5) -> None:
    for i, (h, w) in enumerate(SIZES):
        torch.testing.assert_close(batched[i, :, :h, :w], alone[i], rtol=tol, atol=tol)
        padded = batched[i].clone()
        padded[:, :h, :w] = 0
        assert padded.abs().max() == 0, f"image {i} has non-zero padding"


def _randomise(module: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("tlu", [True, False])
def test_padding_aware_frn_gives_each_image_its_output_alone(impl, tlu):
    plain = _randomise(FilterResponseNorm2d(6, tlu=tlu))
    aware = PaddingAwareFilterResponseNorm2d(6, tlu=tlu)
    aware.load_state_dict(plain.state_dict())
    x = _padded()
    with frn_impl(impl), padding.image_sizes(SIZES, CANVAS):
        batched = aware(x)
    with frn_impl("reference"):
        alone = _alone(plain, x)
    _assert_matches_alone(batched, alone)


def test_plain_frn_depends_on_the_batch_the_control():
    plain = _randomise(FilterResponseNorm2d(6))
    x = _padded()
    batched = plain(x)
    diff = (batched[0, :, :5, :7] - _alone(plain, x)[0]).abs().max()
    assert diff > 1e-2


@pytest.mark.parametrize("impl", ["autograd", "compiled"])
@pytest.mark.parametrize("tlu", [True, False])
def test_masked_frn_kernels_give_the_reference_gradients(impl, tlu):
    module = _randomise(PaddingAwareFilterResponseNorm2d(6, tlu=tlu, learnable_eps=True))
    x = _padded().requires_grad_()
    weight = torch.randn(len(SIZES), 6, *CANVAS)
    grads = {}
    for name in ("reference", impl):
        x.grad = None
        module.zero_grad()
        with frn_impl(name), padding.image_sizes(SIZES, CANVAS):
            (module(x) * weight).sum().backward()
        grads[name] = [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]
    for ref, got in zip(grads["reference"], grads[impl], strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # the padding neither sends nor receives gradient
    assert grads[impl][0][~_mask().expand_as(x)].abs().max() == 0


@pytest.mark.parametrize("tlu", [True, False])
def test_masked_frn_passes_gradcheck_in_float64(tlu):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 1, 4, 5, dtype=torch.bool)
    mask[0, :, :3, :4] = True
    mask[1] = True
    params = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    eps = torch.tensor([1e-3], dtype=torch.float64, requires_grad=True)
    tau = params[2] if tlu else None
    for impl in ("autograd", "compiled"):
        def fn(x, w, b, t, e, impl=impl):
            return filter_response_norm(x, w, b, t if tlu else None, e, impl=impl, mask=mask)

        assert torch.autograd.gradcheck(fn, (x, params[0], params[1], params[2], eps))
    reference = frn_reference(x, params[0], params[1], tau, eps, mask=mask)
    fast = filter_response_norm(x, params[0], params[1], tau, eps, impl="autograd", mask=mask)
    torch.testing.assert_close(fast, reference)


def test_frn_in_float64_computes_its_learned_eps_in_float64():
    layer = FilterResponseNorm2d(3, learnable_eps=True).double()
    with torch.no_grad():
        layer.learned_eps.fill_(1e-4)  # exactly the float64 nearest 1e-4
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    eps = layer.effective_eps(x)
    assert eps.dtype == torch.float64
    assert eps.item() == 1e-6 + 1e-4  # through float32 it would be off by ~3e-12
    nu2 = x.square().mean(dim=(2, 3), keepdim=True)
    expected = torch.maximum(x / torch.sqrt(nu2 + 1e-6 + 1e-4), torch.zeros(()))
    torch.testing.assert_close(layer(x), expected, rtol=1e-14, atol=1e-14)


def test_padding_aware_group_norm_gives_each_image_its_output_alone():
    plain = _randomise(nn.GroupNorm(3, 6))
    aware = padding.PaddingAwareGroupNorm(3, 6)
    aware.load_state_dict(plain.state_dict())
    x = _padded()
    with padding.image_sizes(SIZES, CANVAS):
        batched = aware(x)
    _assert_matches_alone(batched, _alone(plain, x))


def test_padding_aware_batch_norm_takes_statistics_over_valid_pixels_only():
    aware = _randomise(padding.PaddingAwareBatchNorm2d(6, momentum=0.5))
    x = _padded()
    with padding.image_sizes(SIZES, CANVAS):
        batched = aware(x)
    valid = torch.cat(
        [x[i, :, :h, :w].reshape(6, -1) for i, (h, w) in enumerate(SIZES)], dim=1
    )
    mean, var = valid.mean(dim=1), valid.var(dim=1, unbiased=False)
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + aware.eps)
    expected = expected * aware.weight.view(1, -1, 1, 1) + aware.bias.view(1, -1, 1, 1)
    _assert_matches_alone(batched, [expected[i, :, :h, :w] for i, (h, w) in enumerate(SIZES)])
    torch.testing.assert_close(aware.running_mean, 0.5 * mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        aware.running_var, 0.5 + 0.5 * valid.var(dim=1, unbiased=True), rtol=1e-5, atol=1e-6
    )
    assert aware.num_batches_tracked.item() == 1


def test_padding_aware_batch_norm_in_eval_and_frozen_bn_give_each_image_its_output_alone():
    for plain, aware in (
        (nn.BatchNorm2d(6), padding.PaddingAwareBatchNorm2d(6)),
        (FrozenBatchNorm2d(6), padding.PaddingAwareFrozenBatchNorm2d(6)),
    ):
        with torch.no_grad():
            plain.running_mean.normal_()
            plain.running_var.uniform_(0.5, 2)
        aware.load_state_dict(plain.state_dict())
        plain.eval(), aware.eval()
        x = _padded()
        with padding.image_sizes(SIZES, CANVAS):
            batched = aware(x)
        _assert_matches_alone(batched, _alone(plain, x))


def test_padding_aware_tlu_zeroes_padding_and_its_gradient():
    plain = TLUFixture.tlu()
    aware = PaddingAwareTLU(6)
    aware.load_state_dict(plain.state_dict())
    x = _padded().requires_grad_()
    with padding.image_sizes(SIZES, CANVAS):
        batched = aware(x)
    _assert_matches_alone(batched, _alone(plain, x.detach()))
    batched.sum().backward()
    assert x.grad[~_mask().expand_as(x)].abs().max() == 0
    # tau's gradient counts only valid pixels at or below tau
    below = (x.detach() <= aware.tau.view(1, -1, 1, 1)) & _mask()
    torch.testing.assert_close(aware.tau.grad, below.sum(dim=(0, 2, 3)).float())


class TLUFixture:
    @staticmethod
    def tlu() -> nn.Module:
        layer = get_activation("FRN", 6)
        with torch.no_grad():
            layer.tau.copy_(torch.linspace(-1, 1, 6))
        return layer


def test_registry_builds_padding_aware_forms_with_stock_parameter_names():
    for name in ("FRN", "BN", "GN", "SyncBN", "FrozenBN", "LN", ""):
        plain = get_norm_act(name, 32, act=True).norm
        aware = get_norm_act(name, 32, act=True, padding_aware=True).norm
        plain_keys = set(plain.state_dict()) if plain is not None else set()
        assert set(aware.state_dict()) == plain_keys, name
        assert aware is not None, name
    assert isinstance(get_activation("FRN", 8, padding_aware=True), PaddingAwareTLU)
    assert get_activation("BN", 8, padding_aware=True) is F.relu


def test_a_norm_without_a_padding_aware_form_is_zeroed_with_a_warning_naming_it(caplog):
    register_norm("myIN", lambda c: nn.InstanceNorm2d(c, affine=True))
    try:
        with caplog.at_level(logging.WARNING, logger="frn_det.layers.norm_act"):
            slot = get_norm_act("myIN", 6, act=True, padding_aware=True)
        assert "'myIN' declares no padding-aware form" in caplog.text
        x = _padded()
        with padding.image_sizes(SIZES, CANVAS):
            y = slot.activation(slot.norm(x))
        assert y[~_mask().expand_as(y)].abs().max() == 0
    finally:
        unregister_norm("myIN")


def test_a_batch_without_sizes_is_refused_by_name():
    aware = PaddingAwareFilterResponseNorm2d(6)
    with pytest.raises(RuntimeError, match="PaddingAwareFilterResponseNorm2d.*no image sizes"):
        aware(_padded())
    # A lone map without sizes is taken as unpadded: exactly the plain layer.
    plain = FilterResponseNorm2d(6)
    x = _padded()[:1]
    torch.testing.assert_close(aware(x), plain(x))


def test_a_map_at_no_stride_of_the_canvas_is_refused():
    aware = padding.PaddingAwareGroupNorm(3, 6)
    with padding.image_sizes(SIZES, (16, 16)):
        with pytest.raises(ValueError, match=r"shape \(3, 6, 8, 8\).*|no power-of-two"):
            aware(torch.randn(3, 6, 7, 8))
        with pytest.raises(RuntimeError, match="a batch of 2 maps but 3 recorded"):
            aware(torch.randn(2, 6, 8, 8))


def test_masks_follow_the_stride_of_each_map():
    # an image of 100 x 37 on a 128 x 64 canvas: at stride 4 it covers 25 x 10 of 32 x 16
    with padding.image_sizes([(100, 37), (128, 64)], (128, 64)):
        mask = padding.valid_mask(torch.zeros(2, 1, 32, 16), "test")
        assert mask[0, 0].sum(dim=0).max() == 25 and mask[0, 0].sum(dim=1).max() == 10
        assert mask[1].all()
        p4 = padding.valid_mask(torch.zeros(2, 1, 8, 4), "test")  # stride 16
        assert p4[0, 0].sum(dim=0).max() == 7 and p4[0, 0].sum(dim=1).max() == 3
        # stride 64: ceil(100/64) x ceil(37/64) = 2 x 1 is the whole map: nothing to mask
        assert padding.valid_mask(torch.zeros(2, 1, 2, 1), "test") is None

