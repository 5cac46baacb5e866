"""Properties of the FRN layers and of every kernel path (reference, autograd, compiled)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frn_det.layers import frn
from frn_det.layers.frn import (
    FRN_IMPLS,
    IMPL_ENV_VAR,
    TLU,
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    filter_response_norm,
    frn_impl,
    frn_reference,
    get_frn_impl,
    set_frn_impl,
)

PATHS = ("reference", "autograd", "compiled")
FAST_PATHS = ("autograd", "compiled")
FORMS = {"2d": (2, 3, 4, 5), "1d": (5, 3)}


@pytest.fixture(autouse=True)
def _seed_and_restore_impl():
    torch.manual_seed(0)
    yield
    set_frn_impl(None)


def _params(channels: int, dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float) -> torch.Tensor:
        return (
            torch.rand(channels, generator=gen, dtype=dtype) * (high - low) + low
        ).requires_grad_()

    return {"weight": uniform(0.5, 1.5), "bias": uniform(-0.3, 0.3), "tau": uniform(-0.3, 0.3)}


def _module(form: str, tlu: bool, learnable_eps: bool, dtype=torch.float64) -> nn.Module:
    cls = FilterResponseNorm2d if form == "2d" else FilterResponseNorm1d
    module = cls(3, tlu=tlu, learnable_eps=learnable_eps).to(dtype)
    with torch.no_grad():
        for name, value in _params(3, dtype).items():
            if getattr(module, name) is not None:
                getattr(module, name).copy_(value)
        if module.learned_eps is not None:
            # negative, so that the sign(eps_l) factor of its gradient is exercised
            module.learned_eps.fill_(-2e-3)
    return module


def _input_with_margin(shape, dtype, module: nn.Module, margin: float = 1e-3) -> torch.Tensor:
    """Random x whose pre-TLU values stay ``margin`` away from tau (finite differences)."""
    for seed in range(100):
        x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
        x = x + x.sign() * 0.2  # away from 0, where x / sqrt(x^2 + eps) is steep for (N, C)
        if module.tau is None:
            return x
        with torch.no_grad():
            pre_tlu = frn_reference(x, module.weight, module.bias, None, module.effective_eps(x))
            gap = (pre_tlu - module.tau.reshape([1, -1] + [1] * (x.dim() - 2))).abs().min()
        if gap > margin:
            return x
    raise AssertionError("no input with the margin found")


def _run(module: nn.Module, x: torch.Tensor, impl: str, grad: torch.Tensor | None = None):
    """Output and gradients (x first, then parameters by name) of module(x) under impl."""
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with frn_impl(impl):
        out = module(x)
    if grad is None:
        grad = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(7))
    out.backward(grad)
    grads = {"x": x.grad, **{n: p.grad.clone() for n, p in module.named_parameters()}}
    return out.detach(), grads


def _assert_same(actual, expected, **tolerances):
    out, grads = actual
    ref_out, ref_grads = expected
    torch.testing.assert_close(out, ref_out, **tolerances)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert grads[name] is not None, name
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name, **tolerances)


# ---------------------------------------------------------------------------------------
# the layer's definition


def test_parameters_have_the_documented_names_and_initial_values():
    frn2d = FilterResponseNorm2d(4)
    assert dict(frn2d.named_parameters()).keys() == {"weight", "bias", "tau"}
    assert (frn2d.weight == 1).all() and (frn2d.bias == 0).all() and (frn2d.tau == 0).all()
    assert (frn2d.num_features, frn2d.eps, frn2d.tlu) == (4, 1e-6, True)
    assert frn2d.learned_eps is None and frn2d.tau is not None

    frn1d = FilterResponseNorm1d(4, tlu=False)
    assert dict(frn1d.named_parameters()).keys() == {"weight", "bias", "learned_eps"}
    assert frn1d.learned_eps.shape == (1,) and frn1d.learned_eps.item() == pytest.approx(1e-4)
    assert "learnable_eps=True" in repr(frn1d) and "tlu=False" in repr(frn1d)

    tlu = TLU(4)
    assert dict(tlu.named_parameters()).keys() == {"tau"} and (tlu.tau == 0).all()


def test_both_forms_accept_the_keywords_the_norm_registry_passes():
    for cls in (FilterResponseNorm2d, FilterResponseNorm1d):
        layer = cls(8, eps=1e-5, learnable_eps=False, tlu=False)
        assert (layer.eps, layer.learned_eps, layer.tau, layer.tlu) == (1e-5, None, None, False)


def test_reference_matches_the_papers_listing():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    p = _params(3, torch.float64)
    eps = torch.tensor([1e-6], dtype=torch.float64)
    view = (1, -1, 1, 1)
    nu2 = x.square().mean(dim=(2, 3), keepdim=True)
    expected = torch.maximum(
        p["weight"].view(view) * x * torch.rsqrt(nu2 + eps) + p["bias"].view(view),
        p["tau"].view(view),
    )
    torch.testing.assert_close(frn_reference(x, p["weight"], p["bias"], p["tau"], eps), expected)


def test_fc_features_are_normalised_per_element():
    # (N, C): nu2 = x^2, not a mean over every dim, so x_hat ~= sign(x)
    x = torch.randn(6, 3, dtype=torch.float64)
    out = FilterResponseNorm1d(3, learnable_eps=False, tlu=False).double()(x)
    torch.testing.assert_close(out, x / torch.sqrt(x.square() + 1e-6))


def test_tlu_is_a_per_channel_maximum_with_a_learned_threshold():
    tlu = TLU(3)
    with torch.no_grad():
        tlu.tau.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = tlu(x)
    torch.testing.assert_close(out, torch.maximum(x, tlu.tau.view(1, 3, 1, 1)))
    out.sum().backward()
    assert tlu.tau.grad is not None and x.grad is not None


def test_tlu_gradients_match_torch_maximum_away_from_ties_and_pass_gradcheck():
    tlu = TLU(3).double()
    with torch.no_grad():
        tlu.tau.copy_(torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64))
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, tau: TLU.forward(_with_tau(tlu, tau), x), (x, tlu.tau))
    grad = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    got = torch.autograd.grad(tlu(x), (x, tlu.tau), grad)
    expected = torch.autograd.grad(torch.maximum(x, tlu.tau.view(1, 3, 1, 1)), (x, tlu.tau), grad)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def _with_tau(tlu: TLU, tau: torch.Tensor) -> TLU:
    clone = TLU(tlu.num_features)
    del clone.tau
    clone.tau = tau
    return clone


def test_tlu_keeps_only_its_output_for_backward():
    tlu = TLU(4)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = tlu(x * 1.0)
    storages = {t.untyped_storage().data_ptr() for t in saved}
    assert out.untyped_storage().data_ptr() in storages
    assert sum(t.numel() for t in saved) == out.numel() + 4  # the output and tau


def test_a_tlu_tie_sends_the_gradient_to_tau_like_relu_at_zero():
    tlu = TLU(1)
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    tlu(x).sum().backward()
    assert (x.grad == 0).all() and tlu.tau.grad.item() == 4.0


# ---------------------------------------------------------------------------------------
# every path computes the same function


@pytest.mark.parametrize("learnable_eps", [False, True], ids=["fixed_eps", "learned_eps"])
@pytest.mark.parametrize("tlu", [True, False], ids=["tlu", "no_tlu"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("impl", PATHS)
def test_gradients_pass_gradcheck_in_float64(impl, form, tlu, learnable_eps):
    module = _module(form, tlu, learnable_eps)
    x = _input_with_margin(FORMS[form], torch.float64, module).requires_grad_()
    eps0 = module.eps
    inputs = [x, module.weight, module.bias]
    inputs += [module.tau] if tlu else []
    inputs += [module.learned_eps] if learnable_eps else []

    def fn(x, weight, bias, *rest):
        tau = rest[0] if tlu else None
        eps = eps0 + rest[-1].abs() if learnable_eps else torch.tensor([eps0], dtype=x.dtype)
        return filter_response_norm(x, weight, bias, tau, eps, impl=impl)

    # The compiled kernels cost a fork-join of OpenMP threads per call, which on a loaded
    # small CPU makes the hundreds of calls of a full check slow; fast mode checks v^T J u
    # for random u, v with a few calls.
    fast_mode = impl == "compiled"
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast_mode)


@pytest.mark.parametrize("learnable_eps", [False, True], ids=["fixed_eps", "learned_eps"])
@pytest.mark.parametrize("tlu", [True, False], ids=["tlu", "no_tlu"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("impl", FAST_PATHS)
def test_every_path_equals_the_plain_formula_in_output_and_gradients(
    impl, form, tlu, learnable_eps
):
    module = _module(form, tlu, learnable_eps)
    shape = (4, 3, 6, 5) if form == "2d" else (8, 3)
    x = torch.randn(shape, dtype=torch.float64)
    expected = _run(module, x, "reference")
    _assert_same(_run(module, x, impl), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", FAST_PATHS)
def test_ties_at_the_threshold_split_the_gradient_as_torch_maximum_does(impl):
    # Zero samples and zero-padded regions give y == beta exactly; with tau == beta every
    # such element is a tie, where torch.maximum sends half the gradient each way.
    module = _module("2d", tlu=True, learnable_eps=False)
    with torch.no_grad():
        module.tau.copy_(module.bias)
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    x[0] = 0
    x[1, :, :2] = 0
    x[2, :, :, 4:] = 0
    expected = _run(module, x, "reference")
    actual = _run(module, x, impl)
    _assert_same(actual, expected, rtol=1e-10, atol=1e-12)
    assert actual[1]["tau"].abs().sum() > 0


@pytest.mark.parametrize("impl", FAST_PATHS)
def test_float32_paths_match_the_plain_formula(impl):
    module = _module("2d", tlu=True, learnable_eps=True, dtype=torch.float32)
    x = torch.randn(2, 3, 17, 13)
    _assert_same(_run(module, x, impl), _run(module, x, "reference"), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------
# no batch dependence, no train/eval difference


@pytest.mark.parametrize("impl", PATHS)
def test_output_of_a_sample_does_not_depend_on_the_batch(impl):
    module = _module("2d", tlu=True, learnable_eps=False, dtype=torch.float32)
    batch = torch.randn(4, 3, 9, 7)
    other = batch.clone()
    other[1:] = torch.randn(3, 3, 9, 7) * 10
    grad = torch.randn(4, 3, 9, 7)
    out, grads = _run(module, batch, impl, grad)
    out_other, grads_other = _run(module, other, impl, grad)
    alone, grads_alone = _run(module, batch[:1], impl, grad[:1])
    torch.testing.assert_close(out[0], out_other[0])
    torch.testing.assert_close(out[:1], alone)
    torch.testing.assert_close(grads["x"][0], grads_other["x"][0])
    torch.testing.assert_close(grads["x"][:1], grads_alone["x"])


@pytest.mark.parametrize("impl", PATHS)
def test_train_and_eval_give_the_same_output(impl):
    module = _module("2d", tlu=True, learnable_eps=True, dtype=torch.float32)
    x = torch.randn(2, 3, 10, 6)
    with frn_impl(impl):
        train_out = module.train()(x)
        eval_out = module.eval()(x)
        with torch.no_grad():
            no_grad_out = module(x)
    torch.testing.assert_close(train_out, eval_out)
    torch.testing.assert_close(train_out, no_grad_out)


# ---------------------------------------------------------------------------------------
# learned eps at H*W = 1


@pytest.mark.parametrize("shape", [(6, 3, 1, 1), (6, 3)], ids=["1x1_map", "fc_features"])
@pytest.mark.parametrize("impl", PATHS)
def test_learned_eps_gives_non_zero_gradients_where_h_w_is_1(impl, shape):
    cls = FilterResponseNorm2d if len(shape) == 4 else FilterResponseNorm1d
    module = cls(3, learnable_eps=True, tlu=False).double()
    x = torch.randn(shape, dtype=torch.float64)
    x = x + x.sign()
    _, grads = _run(module, x, impl, torch.ones(shape, dtype=torch.float64))
    assert (grads["x"] != 0).all()
    assert grads["learned_eps"].abs().item() > 0 and torch.isfinite(grads["learned_eps"]).all()


@pytest.mark.parametrize("shape", [(6, 3, 1, 1), (6, 3)], ids=["1x1_map", "fc_features"])
def test_without_learned_eps_the_input_gradient_vanishes_where_h_w_is_1(shape):
    # x_hat = x / sqrt(x^2 + 1e-6) ~= sign(x): d x_hat / dx = 1e-6 / |x|^3 for |x| >= 1
    cls = FilterResponseNorm2d if len(shape) == 4 else FilterResponseNorm1d
    x = torch.randn(shape, dtype=torch.float64)
    x = x + x.sign()
    fixed = cls(3, learnable_eps=False, tlu=False).double()
    learned = cls(3, learnable_eps=True, tlu=False).double()
    _, grads_fixed = _run(fixed, x, "reference", torch.ones(shape, dtype=torch.float64))
    _, grads_learned = _run(learned, x, "reference", torch.ones(shape, dtype=torch.float64))
    assert grads_fixed["x"].abs().max() <= 1e-6
    # eps = 1e-6 + 1e-4 instead of 1e-6: about 100 times the gradient, and eps can grow
    assert (grads_learned["x"].abs() > 50 * grads_fixed["x"].abs()).all()
    assert grads_learned["learned_eps"].abs().item() > 1e-3


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("impl", PATHS)
def test_an_empty_batch_gives_an_empty_output_and_zero_parameter_gradients(impl, form):
    # a mask or box head sees no RoIs in an image without proposals
    module = _module(form, tlu=True, learnable_eps=True)
    shape = (0, 3, 14, 14) if form == "2d" else (0, 3)
    empty = torch.zeros(shape, dtype=torch.float64)
    out, grads = _run(module, empty, impl, empty)
    assert out.shape == shape and grads["x"].shape == shape
    assert all((grads[name] == 0).all() for name in ("weight", "bias", "tau", "learned_eps"))


# ---------------------------------------------------------------------------------------
# reduced precision


@pytest.mark.parametrize("impl", PATHS)
def test_fp16_inputs_up_to_1e4_neither_overflow_nor_lose_accuracy(impl):
    # Input and parameters hold fp16 values, so the fp32 run sees the same numbers (and the
    # same TLU mask) and only the precision of the computation differs.
    module = _module("2d", tlu=True, learnable_eps=True, dtype=torch.float16).float()
    x = (torch.randn(2, 3, 16, 16) * 4e3).clamp(-1e4, 1e4).half()
    assert x.abs().max() > 256  # where x^2 overflows fp16 (max 65504)
    grad = torch.randn(2, 3, 16, 16).half()
    expected_out, expected_grads = _run(module, x.float(), impl, grad.float())
    out, grads = _run(copy.deepcopy(module).half(), x, impl, grad)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    torch.testing.assert_close(out.float(), expected_out, rtol=1e-2, atol=1e-2)
    # learned_eps's gradient (~1e-7 here) underflows an fp16 parameter's grad, as with any
    # fp16 parameter; mixed precision keeps parameters in fp32 (the autocast test below).
    for name in ("x", "weight", "bias", "tau"):
        scale = expected_grads[name].abs().max()
        torch.testing.assert_close(
            grads[name].float() / scale, expected_grads[name] / scale, rtol=0, atol=1e-2
        )


@pytest.mark.parametrize("impl", PATHS)
def test_bf16_cpu_autocast_with_inputs_up_to_1e4_stays_finite_and_close_to_fp32(impl):
    conv = nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(1e4)  # conv outputs in the thousands: squares overflow fp16
    module = FilterResponseNorm2d(8, learnable_eps=True)
    x = torch.randn(2, 3, 12, 12)
    with frn_impl(impl):
        expected = module(conv(x))
        expected.square().sum().backward()
        expected_grad = conv.weight.grad.clone()
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = conv(x)
            out = module(hidden)
        out.float().square().sum().backward()
    assert hidden.dtype == out.dtype == torch.bfloat16
    assert hidden.abs().max() > 1e3
    assert torch.isfinite(out).all() and torch.isfinite(conv.weight.grad).all()
    torch.testing.assert_close(out.float(), expected, rtol=5e-2, atol=5e-2)
    cosine = F.cosine_similarity(conv.weight.grad.flatten(), expected_grad.flatten(), dim=0)
    assert cosine > 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs CUDA")
@pytest.mark.parametrize("impl", PATHS)
def test_fp16_cuda_autocast_with_inputs_up_to_1e4_stays_finite(impl):
    module = FilterResponseNorm2d(8, learnable_eps=True).cuda()
    x = (torch.randn(2, 8, 16, 16, device="cuda") * 1e4).requires_grad_()
    with frn_impl(impl), torch.autocast("cuda", dtype=torch.float16):
        out = module(x.half())
    out.float().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    with frn_impl("reference"):
        torch.testing.assert_close(out.float(), module(x), rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------
# memory layouts, memory for backward, compilation


@pytest.mark.parametrize("impl", PATHS)
def test_channels_last_input_gives_the_same_numbers(impl):
    module = _module("2d", tlu=True, learnable_eps=False, dtype=torch.float32)
    x = torch.randn(2, 3, 7, 9)
    grad = torch.randn(2, 3, 7, 9)
    expected = _run(module, x, impl, grad)
    actual = _run(module, x.to(memory_format=torch.channels_last), impl, grad)
    _assert_same(actual, expected, rtol=1e-5, atol=1e-6)
    assert actual[0].is_contiguous(memory_format=torch.channels_last)


def test_non_contiguous_input_gives_the_same_numbers():
    module = _module("2d", tlu=True, learnable_eps=False, dtype=torch.float32)
    x = torch.randn(2, 3, 8, 18)[..., ::2]
    _assert_same(_run(module, x, "autograd"), _run(module, x, "reference"), rtol=1e-5, atol=1e-6)


def _saved_bytes(fn) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("impl", FAST_PATHS)
def test_fast_paths_save_only_the_input_and_per_sample_channel_statistics(impl, dtype):
    n, c = 4, 16
    module = FilterResponseNorm2d(c, learnable_eps=True).to(dtype)
    x = torch.randn(n, c, 32, 32, dtype=dtype, requires_grad=True)
    with frn_impl(impl):
        saved = _saved_bytes(lambda: module(x))
    statistics = n * c * 4  # one fp32 rsqrt(nu2 + eps) per (sample, channel)
    params = sum(p.numel() * 4 for p in module.parameters())  # or their fp32 copies
    assert saved <= x.numel() * x.element_size() + statistics + params
    with frn_impl("reference"):
        assert _saved_bytes(lambda: module(x)) > 2 * x.numel() * x.element_size()


@pytest.mark.parametrize("impl", FAST_PATHS)
def test_fast_paths_keep_only_the_input_of_fully_connected_features(impl):
    # At (N, C) the statistic is as large as the input: it is recomputed, not saved.
    module = FilterResponseNorm1d(64)
    x = torch.randn(128, 64, requires_grad=True)
    with frn_impl(impl):
        saved = _saved_bytes(lambda: module(x * 1.0))
    params = sum(p.numel() * 4 for p in module.parameters()) + 4  # and eps
    assert saved <= x.numel() * 4 + params
    with frn_impl(impl):
        fast = torch.autograd.grad(module(x).square().sum(), [x, *module.parameters()])
    with frn_impl("reference"):
        plain = torch.autograd.grad(module(x).square().sum(), [x, *module.parameters()])
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_compiled_path_does_not_recompile_for_new_spatial_or_batch_sizes():
    counters = torch._dynamo.utils.counters["stats"]
    f64 = torch.float64  # the gradchecks' dtype: this test adds no kernels to the run
    maps = FilterResponseNorm2d(5, learnable_eps=True).to(f64)
    features = FilterResponseNorm1d(5, learnable_eps=True).to(f64)
    with frn_impl("compiled"):
        # the first call of each form compiles its forward and backward kernels
        _run(maps, torch.randn(2, 5, 20, 30, dtype=f64), "compiled")
        _run(features, torch.randn(4, 5, dtype=f64), "compiled")
        graphs = counters["unique_graphs"]
        map_sizes = [(1, 5, 13, 17), (2, 5, 70, 80), (6, 5, 7, 7), (1, 5, 2, 3), (3, 5, 1, 2)]
        for size in map_sizes:
            _run(maps, torch.randn(size, dtype=f64), "compiled")
            with torch.no_grad():
                maps(torch.randn(size, dtype=f64))
        for n in (1, 3, 64):
            _run(features, torch.randn(n, 5, dtype=f64), "compiled")
            _run(maps, torch.randn(n, 5, 1, 1, dtype=f64), "compiled")  # 1x1: the (N, C) kernel
        wider = FilterResponseNorm2d(64, learnable_eps=True).to(f64)
        _run(wider, torch.randn(2, 64, 5, 5, dtype=f64), "compiled")
    assert counters["unique_graphs"] == graphs
    # and the calls did run compiled kernels
    assert "cpu" not in frn._compile_broken
    assert {("_forward_kernel", "cpu", f64), ("_backward_kernel", "cpu", f64)} <= {
        key[:3] for key in frn._compiled
    }


def test_compile_failure_falls_back_to_the_autograd_path_with_one_warning(monkeypatch):
    def broken(kernel, key):
        def fail(*args):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(frn, "_compiled_kernel", broken)
    monkeypatch.setattr(frn, "_compile_broken", set())
    module = _module("2d", tlu=True, learnable_eps=True, dtype=torch.float32)
    x = torch.randn(2, 3, 5, 5)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        actual = _run(module, x, "compiled")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(module, x, "compiled")
    _assert_same(actual, _run(module, x, "reference"), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# deployment: trace, script, export, torch.compile of a whole model


def _deploy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        FilterResponseNorm2d(8, learnable_eps=True),
        nn.Conv2d(8, 4, 1),
        FilterResponseNorm2d(4, tlu=False),
        TLU(4),
        nn.Flatten(),
        nn.Linear(4 * 5 * 7, 6),
        FilterResponseNorm1d(6),
    ).eval()


@pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:FutureWarning")
def test_traced_and_scripted_modules_give_the_same_output_as_eager():
    model = _deploy_model()
    x = torch.randn(2, 3, 7, 9)
    with frn_impl("autograd"):  # every path is the same function (tested above)
        expected = model(x)
    traced = torch.jit.trace(model, x)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(traced(x), expected)
    torch.testing.assert_close(scripted(x), expected)
    with pytest.raises(torch.jit.Error, match=r"expects input of shape \(N, 8, H, W\)"):
        torch.jit.script(model[1])(torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("strict", [False, True], ids=["non_strict", "strict"])
def test_exported_module_gives_the_same_output_as_eager(strict):
    model = _deploy_model()
    x = torch.randn(2, 3, 7, 9)
    exported = torch.export.export(model, (x,), strict=strict)
    with frn_impl("autograd"):
        torch.testing.assert_close(exported.module()(x), model(x))


def test_a_model_under_torch_compile_gives_the_same_output_and_gradients():
    model = _deploy_model().train()
    x = torch.randn(2, 3, 7, 9)
    with frn_impl("reference"):  # the formula dynamo traces, evaluated eagerly
        expected = model(x)
    expected.sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = torch.compile(model, backend="aot_eager")(x)
    out.sum().backward()
    torch.testing.assert_close(out, expected)
    for grad, expected_grad in zip(
        [p.grad for p in model.parameters()], expected_grads, strict=True
    ):
        torch.testing.assert_close(grad, expected_grad)


# ---------------------------------------------------------------------------------------
# errors and the implementation switch


@pytest.mark.parametrize(
    ("layer", "shape", "message"),
    [
        (
            FilterResponseNorm2d(256),
            (2, 128, 8, 8),
            "FilterResponseNorm2d(256) expects input of shape (N, 256, H, W), got (2, 128, 8, 8)",
        ),
        (
            FilterResponseNorm2d(4),
            (2, 4),
            "FilterResponseNorm2d(4) expects input of shape (N, 4, H, W), got (2, 4)",
        ),
        (
            FilterResponseNorm1d(16),
            (2, 16, 1, 1),
            "FilterResponseNorm1d(16) expects input of shape (N, 16), got (2, 16, 1, 1)",
        ),
        (FilterResponseNorm1d(16), (2, 8), "FilterResponseNorm1d(16) expects input of shape"),
        (TLU(8), (2, 4, 3, 3), "TLU(8) expects input of shape (N, 8, ...), got (2, 4, 3, 3)"),
    ],
)
def test_wrong_rank_or_channel_count_raises_a_value_error_naming_layer_and_shapes(
    layer, shape, message
):
    with pytest.raises(ValueError) as info:
        layer(torch.randn(shape))
    assert message in str(info.value)


def test_impl_switch_rejects_bad_values_naming_switch_value_and_accepted_values():
    with pytest.raises(ValueError) as info:
        set_frn_impl("fast")
    assert "set_frn_impl" in str(info.value) and "'fast'" in str(info.value)
    assert all(repr(v) in str(info.value) for v in FRN_IMPLS)
    assert get_frn_impl() == "auto"
    one = torch.ones(1)
    with pytest.raises(ValueError, match=r"filter_response_norm\(impl=\).*'bogus'"):
        filter_response_norm(torch.randn(1, 1, 2, 2), one, one, None, one, impl="bogus")


def test_impl_environment_variable_is_read_and_validated(monkeypatch):
    monkeypatch.setenv(IMPL_ENV_VAR, "reference")
    assert get_frn_impl() == "reference"
    with frn_impl("autograd"):
        assert get_frn_impl() == "autograd"
    assert get_frn_impl() == "reference"
    monkeypatch.setenv(IMPL_ENV_VAR, "turbo")
    with pytest.raises(ValueError) as info:
        FilterResponseNorm2d(2)(torch.randn(1, 2, 3, 3))
    assert IMPL_ENV_VAR in str(info.value) and "'turbo'" in str(info.value)
    assert all(repr(v) in str(info.value) for v in FRN_IMPLS)
    set_frn_impl("autograd")  # an explicit choice wins over the environment
    assert get_frn_impl() == "autograd"


@pytest.mark.parametrize("impl", PATHS)
def test_each_impl_value_selects_its_kernel(impl):
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with frn_impl(impl):
        out = FilterResponseNorm2d(3)(x)
    names = set()
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None:
            names.add(type(node).__name__)
            stack.extend(fn for fn, _ in node.next_functions)
    uses_function = "_FilterResponseNormFunctionBackward" in names
    assert uses_function == (impl != "reference")
