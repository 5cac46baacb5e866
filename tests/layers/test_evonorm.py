"""EvoNorm-S0 and -B0: the paper's formulas, their gradients, batch behaviour and slots."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from torch import nn
from torch.func import functional_call

from frn_det import integration
from frn_det.config import add_frn_config
from frn_det.layers import (
    EvoNormB0,
    EvoNormS0,
    PaddingAwareEvoNormB0,
    PaddingAwareEvoNormS0,
    get_activation,
    get_fc_norm_act,
    get_norm_act,
    norm_config_options,
    padding,
    registered_norms,
)
from frn_det.layers.evonorm import b0_formula, s0_formula

EPS = 1e-5
SIZES = [(5, 7), (8, 8), (3, 8)]  # valid (h, w) of three images on an 8 x 8 canvas
CANVAS = (8, 8)


def _randomised(module: nn.Module, seed: int = 1) -> nn.Module:
    """gamma, beta, v drawn away from their init so every term shows in the output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0, 0.5)
        if module.v is not None:
            module.v.normal_(0, 1)
    return module


def _x(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(*shape, dtype=dtype) * 2 + 0.5  # not centred: B0 does not centre


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)


def _biased_var(values: torch.Tensor) -> torch.Tensor:
    return ((values - values.mean()) ** 2).mean()


# ----------------------------------------------------------------------------------------
# The formulas, written out


def _s0_by_the_formula(x, gamma, beta, v, groups):
    """y = x * sigmoid(v x) / sqrt(Var_{C/G,H,W}(x) + eps) * gamma + beta, one group at a time."""
    n, c = x.shape[:2]
    per_group = c // groups
    y = torch.empty_like(x)
    for i in range(n):
        for g in range(groups):
            channels = slice(g * per_group, (g + 1) * per_group)
            block = x[i, channels]
            std = torch.sqrt(_biased_var(block.flatten()) + EPS)
            gate = torch.sigmoid(v[channels, None, None] * block) if v is not None else 1.0
            y[i, channels] = block * gate / std
    return y * _per_channel(gamma) + _per_channel(beta)


def _b0_by_the_formula(x, gamma, beta, v, batch_var):
    """y = x / max(sqrt(batch_var + eps), v x + sqrt(Var_{H,W}(x) + eps)) * gamma + beta."""
    n, c = x.shape[:2]
    y = torch.empty_like(x)
    for i in range(n):
        for k in range(c):
            d = torch.sqrt(batch_var[k] + EPS)
            if v is not None:
                instance = torch.sqrt(_biased_var(x[i, k].flatten()) + EPS)
                d = torch.maximum(d, v[k] * x[i, k] + instance)
            y[i, k] = x[i, k] / d * gamma[k] + beta[k]
    return y


def _batch_var(x: torch.Tensor, unbiased: bool) -> torch.Tensor:
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
    return per_channel.var(dim=1, unbiased=unbiased)


@pytest.mark.parametrize("act", [True, False])
def test_s0_computes_the_papers_formula_in_float64(act):
    layer = _randomised(EvoNormS0(8, groups=4, act=act)).double()
    x = _x(3, 8, 5, 6)
    expected = _s0_by_the_formula(x, layer.weight, layer.bias, layer.v, groups=4)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert (layer.v is not None) is act


@pytest.mark.parametrize("act", [True, False])
def test_b0_computes_the_papers_formula_in_training_and_updates_running_var(act):
    layer = _randomised(EvoNormB0(6, momentum=0.25, act=act)).double()
    x = _x(3, 6, 5, 4)
    expected = _b0_by_the_formula(
        x, layer.weight, layer.bias, layer.v, _batch_var(x, unbiased=False)
    )
    torch.testing.assert_close(layer.train()(x), expected, rtol=1e-12, atol=1e-12)
    # BatchNorm's rule: running <- (1 - momentum) running + momentum * unbiased batch var
    torch.testing.assert_close(
        layer.running_var, 0.75 * 1.0 + 0.25 * _batch_var(x, unbiased=True), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("act", [True, False])
def test_b0_in_eval_uses_running_var_and_leaves_it(act):
    layer = _randomised(EvoNormB0(6, act=act)).double().eval()
    with torch.no_grad():
        layer.running_var.uniform_(0.5, 3)
    before = layer.running_var.clone()
    x = _x(2, 6, 4, 3)
    expected = _b0_by_the_formula(x, layer.weight, layer.bias, layer.v, layer.running_var)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(layer.running_var, before)


def test_s0_default_groups_are_32_or_the_largest_divisor_below():
    assert [EvoNormS0(c).groups for c in (256, 64, 32, 16, 48, 3)] == [32, 32, 32, 16, 24, 3]


# ----------------------------------------------------------------------------------------
# Gradients


def _gradcheck(layer: nn.Module, x: torch.Tensor) -> bool:
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]

    def fn(x, *values):
        return functional_call(layer, dict(zip(names, values, strict=True)), (x,))

    return torch.autograd.gradcheck(fn, (x.requires_grad_(), *params))


@pytest.mark.parametrize("act", [True, False])
def test_s0_passes_gradcheck_in_float64(act):
    assert _gradcheck(_randomised(EvoNormS0(4, groups=2, act=act)).double(), _x(2, 4, 3, 3))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("act", [True, False])
def test_b0_passes_gradcheck_in_float64(act, training):
    layer = _randomised(EvoNormB0(3, act=act)).double().train(training)
    assert _gradcheck(layer, _x(2, 3, 3, 4))


@pytest.mark.parametrize("cls", [PaddingAwareEvoNormS0, PaddingAwareEvoNormB0])
def test_padding_aware_forms_pass_gradcheck_in_float64(cls):
    layer = _randomised(cls(4) if cls is PaddingAwareEvoNormB0 else cls(4, groups=2)).double()
    with padding.image_sizes([(3, 4), (2, 3)], (3, 4)):
        assert _gradcheck(layer, _x(2, 4, 3, 4))


def _grads(fn, x: torch.Tensor, layer: nn.Module) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    layer.zero_grad()
    out = fn(x)
    (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return [out.detach(), x.grad] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("act", [True, False])
def test_hand_written_backward_equals_the_formula_under_autograd(act, training, padded):
    # The formulas are what tracing, export and torch.compile see.
    sizes, canvas = [(5, 6), (3, 6), (5, 4)], (5, 6)
    mask = None
    if padded:
        mask = torch.zeros(3, 1, *canvas, dtype=torch.float64)
        for i, (h, w) in enumerate(sizes):
            mask[i, :, :h, :w] = 1
    s0 = (PaddingAwareEvoNormS0 if padded else EvoNormS0)(8, groups=4, act=act)
    b0 = (PaddingAwareEvoNormB0 if padded else EvoNormB0)(8, act=act)
    s0, b0 = _randomised(s0).double(), _randomised(b0).double().train(training)
    with torch.no_grad():
        b0.running_var.uniform_(0.5, 2)
    running_var = None if training else b0.running_var
    formulas = {
        s0: lambda x: s0_formula(x, s0.weight, s0.bias, s0.v, 4, EPS, mask),
        b0: lambda x: b0_formula(x, b0.weight, b0.bias, b0.v, running_var, EPS, mask),
    }
    x = _x(3, 8, *canvas)
    with padding.image_sizes(sizes if padded else [canvas] * 3, canvas):
        for layer, formula in formulas.items():
            fast, reference = _grads(layer, x, layer), _grads(formula, x, layer)
            for got, want in zip(fast, reference, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [EvoNormS0, EvoNormB0])
def test_traced_layer_computes_what_the_eager_layer_computes(cls):
    layer = _randomised(cls(16)).eval()
    x = _x(2, 16, 5, 4, dtype=torch.float32)
    with torch.no_grad():
        traced = torch.jit.trace(layer, x)
        torch.testing.assert_close(traced(x * 2), layer(x * 2), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------
# Batch behaviour


def test_output_of_an_s0_sample_does_not_depend_on_the_batch():
    layer = _randomised(EvoNormS0(64))
    x = _x(4, 64, 6, 5, dtype=torch.float32)
    batched = layer(x)
    for i in range(4):
        torch.testing.assert_close(batched[i : i + 1], layer(x[i : i + 1]), rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("training", [True, False])
def test_b0_on_1x1_maps_gives_finite_outputs_and_gradients(batch, training):
    # The instance variance of one pixel is exactly 0: sqrt(var) would have an infinite
    # gradient there, and Bessel's correction a NaN variance.
    layer = _randomised(EvoNormB0(8)).train(training)
    x = _x(batch, 8, 1, 1, dtype=torch.float32).requires_grad_()
    y = layer(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert torch.isfinite(layer.running_var).all()


def test_s0_on_1x1_maps_gives_finite_outputs_and_gradients():
    layer = _randomised(EvoNormS0(8, groups=8))  # one channel per group: variance 0
    x = _x(2, 8, 1, 1, dtype=torch.float32).requires_grad_()
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_b0_on_an_empty_batch_leaves_running_var_and_gives_finite_gradients():
    # A mask head without foreground RoIs runs on (0, C, 14, 14).
    layer = _randomised(EvoNormB0(4))
    x = torch.zeros(0, 4, 14, 14, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert y.shape == (0, 4, 14, 14)
    assert torch.equal(layer.running_var, torch.ones(4))
    assert all(torch.equal(p.grad, torch.zeros(4)) for p in layer.parameters())


# ----------------------------------------------------------------------------------------
# Padding-aware forms


def _padded(channels: int = 64) -> torch.Tensor:
    # What a conv leaves in the padding is anything; the layers must ignore it.
    return _x(len(SIZES), channels, *CANVAS, dtype=torch.float32) * 3 + 1


def _mask(x: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(x, dtype=torch.bool)
    for i, (h, w) in enumerate(SIZES):
        mask[i, :, :h, :w] = True
    return mask


def _assert_each_image_gets(batched: torch.Tensor, alone: list[torch.Tensor]) -> None:
    for i, (h, w) in enumerate(SIZES):
        torch.testing.assert_close(batched[i, :, :h, :w], alone[i], rtol=1e-5, atol=1e-5)
    assert batched[~_mask(batched)].abs().max() == 0, "non-zero padding"


@pytest.mark.parametrize("act", [True, False])
def test_padding_aware_s0_gives_each_image_its_output_alone(act):
    plain = _randomised(EvoNormS0(64, act=act))
    aware = PaddingAwareEvoNormS0(64, act=act)
    aware.load_state_dict(plain.state_dict())
    x = _padded().requires_grad_()
    with padding.image_sizes(SIZES, CANVAS):
        batched = aware(x)
    alone = [plain(x[i : i + 1, :, :h, :w])[0] for i, (h, w) in enumerate(SIZES)]
    _assert_each_image_gets(batched, alone)
    batched.sum().backward()
    assert x.grad[~_mask(x)].abs().max() == 0, "the padding received gradient"


def test_plain_s0_depends_on_the_padding_the_control():
    plain = _randomised(EvoNormS0(64))
    x = _padded()
    diff = (plain(x)[0, :, :5, :7] - plain(x[:1, :, :5, :7])[0]).abs().max()
    assert diff > 1e-2


@pytest.mark.parametrize("act", [True, False])
def test_padding_aware_b0_in_eval_gives_each_image_its_output_alone(act):
    plain = _randomised(EvoNormB0(64, act=act)).eval()
    with torch.no_grad():
        plain.running_var.uniform_(0.5, 2)
    aware = PaddingAwareEvoNormB0(64, act=act).eval()
    aware.load_state_dict(plain.state_dict())
    x = _padded()
    with padding.image_sizes(SIZES, CANVAS):
        batched = aware(x)
    alone = [plain(x[i : i + 1, :, :h, :w])[0] for i, (h, w) in enumerate(SIZES)]
    _assert_each_image_gets(batched, alone)


@pytest.mark.parametrize("act", [True, False])
def test_padding_aware_b0_in_training_takes_batch_variance_over_valid_pixels(act):
    aware = _randomised(PaddingAwareEvoNormB0(8, momentum=0.5, act=act)).double()
    x = _padded(8).double()
    with padding.image_sizes(SIZES, CANVAS):
        batched = aware(x)
    valid = torch.cat([x[i, :, :h, :w].reshape(8, -1) for i, (h, w) in enumerate(SIZES)], dim=1)
    batch_var = valid.var(dim=1, unbiased=False)
    alone = [
        _b0_by_the_formula(x[i : i + 1, :, :h, :w], aware.weight, aware.bias, aware.v, batch_var)[0]
        for i, (h, w) in enumerate(SIZES)
    ]
    _assert_each_image_gets(batched, alone)
    expected_running = 0.5 + 0.5 * valid.var(dim=1, unbiased=True)
    torch.testing.assert_close(aware.running_var, expected_running, rtol=1e-12, atol=0)


def test_padding_aware_forms_without_padding_are_the_plain_layers():
    for plain, aware in (
        (EvoNormS0(64), PaddingAwareEvoNormS0(64)),
        (EvoNormB0(64), PaddingAwareEvoNormB0(64)),
    ):
        _randomised(plain)
        aware.load_state_dict(plain.state_dict())
        x = _padded()
        with padding.image_sizes([CANVAS] * len(SIZES), CANVAS):
            torch.testing.assert_close(aware(x), plain(x), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------
# Precision


@pytest.mark.parametrize("cls", [EvoNormS0, EvoNormB0])
def test_bfloat16_autocast_gives_finite_output_close_to_float32(cls):
    layer = _randomised(cls(64))
    conv = nn.Conv2d(16, 64, 3, padding=1)
    x = _x(2, 16, 12, 10, dtype=torch.float32) * 50  # conv outputs of a few hundred
    with torch.no_grad():
        reference = layer(conv(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(conv(x))
    assert y.dtype == torch.bfloat16
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("cls", [EvoNormS0, EvoNormB0])
def test_statistics_of_float16_input_are_taken_in_float32(cls):
    # x^2 of |x| > 256 overflows float16; a variance in float16 would be inf.
    layer = cls(32)
    x = _x(2, 32, 6, 6, dtype=torch.float32) * 400
    y = layer(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), layer(x), rtol=1e-2, atol=1e-2)


# ----------------------------------------------------------------------------------------
# Registry and construction


@pytest.mark.parametrize(
    ("name", "plain", "aware"),
    [
        ("EvoNormS0", EvoNormS0, PaddingAwareEvoNormS0),
        ("EvoNormB0", EvoNormB0, PaddingAwareEvoNormB0),
    ],
)
def test_registry_names_build_the_fused_slots(name, plain, aware):
    assert name in registered_norms()
    norm, activation = get_norm_act(name, 64, act=True)
    assert type(norm) is plain and norm.act and activation is None
    assert {n for n, _ in norm.named_parameters()} == {"weight", "bias", "v"}
    norm, activation = get_norm_act(name, 64, act=False)
    assert not norm.act and norm.v is None and activation is None
    norm, _ = get_norm_act(name, 64, act=True, padding_aware=True)
    assert type(norm) is aware
    norm, _ = get_norm_act(name, 64, act=True, regions=True)
    assert type(norm) is plain
    # a config's MODEL.FRN options are FRN's: EvoNorm gets none and keeps its own eps
    cfg = add_frn_config(get_cfg())
    cfg.MODEL.FRN.EPS, cfg.MODEL.FRN.LEARNABLE_EPS = 1e-6, True
    assert norm_config_options(name, cfg) == norm_config_options(name, cfg, fc=True) == {}
    norm, _ = get_norm_act(name, 64, act=True, **norm_config_options(name, cfg))
    assert norm.eps == EPS
    # options given to get_norm_act are EvoNorm's own
    assert get_norm_act(name, 64, act=True, eps=1e-3).norm.eps == 1e-3
    # a bare ReLU (after a residual addition or a fully connected layer) stays a ReLU
    assert get_activation(name, 64) is F.relu
    assert get_fc_norm_act(name, 64) == (None, F.relu)
    buffers = {n for n, _ in get_norm_act(name, 8).norm.named_buffers()}
    assert buffers == ({"running_var"} if plain is EvoNormB0 else set())


@pytest.mark.parametrize("name", ["EvoNormS0", "EvoNormB0"])
def test_stock_components_get_evonorm_without_its_activation_term(name):
    # frn-det's detectron2.layers.get_norm, which register_with_detectron2 installs; read
    # from its module, since unregistering rebinds every other module's global to stock's
    norm = integration.get_norm(name, 64)
    assert isinstance(norm, EvoNormS0 | EvoNormB0) and not norm.act


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: EvoNormS0(0), r"EvoNormS0: channels must be an integer >= 1, got 0"),
        (lambda: EvoNormB0(2.0), r"EvoNormB0: channels must be an integer >= 1, got 2.0"),
        (lambda: EvoNormS0(64, eps=0), r"EvoNormS0: eps must be a finite number > 0, got 0"),
        (lambda: EvoNormB0(64, eps=-1e-5), r"EvoNormB0: eps must .* > 0, got -1e-05"),
        (
            lambda: EvoNormS0(64, groups=24),
            r"EvoNormS0: groups must be a divisor of channels \(64\), got 24; None takes the "
            r"largest divisor of 64 up to 32 \(32\)",
        ),
        (lambda: EvoNormS0(64, groups=0), r"groups must be a divisor of channels \(64\), got 0"),
        (lambda: EvoNormB0(64, momentum=0), r"EvoNormB0: momentum must be .* \(0, 1\], got 0"),
        (lambda: EvoNormB0(64, momentum=1.5), r"momentum must be a number in \(0, 1\], got 1.5"),
    ],
)
def test_bad_constructor_arguments_are_refused_with_what_is_accepted(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("cls", [EvoNormS0, EvoNormB0])
def test_wrong_input_shape_names_the_expected_one(cls):
    with pytest.raises(
        ValueError,
        match=rf"{cls.__name__}\(8\) expects input of shape "
        r"\(N, 8, H, W\), got \(2, 4, 3, 3\)",
    ):
        cls(8)(torch.zeros(2, 4, 3, 3))
