"""The norm-act registry: stock names build stock modules, FRN fuses its TLU."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d, NaiveSyncBatchNorm, get_norm
from detectron2.layers.batch_norm import LayerNorm
from torch import nn

from frn_det.layers import (
    TLU,
    EvoNormB0,
    EvoNormS0,
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    PaddingAwareFilterResponseNorm2d,
    PaddingAwareTLU,
    get_activation,
    get_fc_norm_act,
    get_norm_act,
    norm_config_options,
    norm_entry,
    norm_module_types,
    norm_names_of,
    padding,
    register_norm,
    registered_norms,
    unregister_norm,
)

STOCK_NAMES = ["BN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN"]


def test_every_detectron2_norm_name_is_registered():
    assert set(STOCK_NAMES + ["", "SyncBN", "FRN"]) <= set(registered_norms())


@pytest.mark.parametrize("name", STOCK_NAMES)
@pytest.mark.parametrize("act", [True, False])
def test_stock_name_builds_the_stock_norm_with_the_same_parameter_names(name, act):
    norm, activation = get_norm_act(name, 64, act=act)
    stock = get_norm(name, 64)
    assert type(norm) is type(stock)
    assert {k: v.shape for k, v in norm.state_dict().items()} == {
        k: v.shape for k, v in stock.state_dict().items()
    }
    # The ReLU is the stateless function, so it adds no parameter or buffer.
    assert activation is (F.relu if act else None)


def test_no_norm_gives_only_the_activation():
    assert get_norm_act("", 8, act=True) == (None, F.relu)
    assert get_norm_act(None, 8, act=False) == (None, None)


def test_syncbn_resolves_to_naive_sync_batch_norm_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    norm, _ = get_norm_act("SyncBN", 16)
    assert type(norm) is NaiveSyncBatchNorm


def test_syncbn_resolves_to_torch_sync_batch_norm_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    norm, _ = get_norm_act("SyncBN", 16)
    assert type(norm) is nn.SyncBatchNorm


def test_frn_slot_fuses_tlu_only_where_stock_has_a_relu():
    with_act, activation = get_norm_act("FRN", 32, act=True)
    without_act, no_activation = get_norm_act("FRN", 32, act=False)
    assert isinstance(with_act, FilterResponseNorm2d) and with_act.tlu
    assert isinstance(without_act, FilterResponseNorm2d) and not without_act.tlu
    assert activation is None and no_activation is None


def test_frn_slot_passes_options_to_the_layer():
    norm, _ = get_norm_act("FRN", 8, act=True, eps=1e-5, learnable_eps=True)
    assert norm.eps == 1e-5
    assert "learned_eps" in dict(norm.named_parameters())


def test_fc_slot_is_a_relu_for_stock_norms_and_frn_with_learned_eps_for_frn():
    assert get_fc_norm_act("GN", 1024) == (None, F.relu)
    assert get_fc_norm_act("BN", 1024, act=False) == (None, None)
    norm, activation = get_fc_norm_act("FRN", 1024, learnable_eps=True)
    assert isinstance(norm, FilterResponseNorm1d) and norm.tlu and activation is None


def test_bare_activation_is_relu_for_stock_norms_and_a_tlu_for_frn():
    assert get_activation("BN", 64) is F.relu
    tlu = get_activation("FRN", 64)
    assert isinstance(tlu, TLU) and tlu.tau.shape == (64,)


def test_a_callable_norm_is_followed_by_relu_like_detectron2():
    norm, activation = get_norm_act(lambda c: nn.GroupNorm(4, c), 16)
    assert isinstance(norm, nn.GroupNorm) and activation is F.relu


def test_unknown_name_lists_every_registered_name():
    with pytest.raises(KeyError) as info:
        get_norm_act("FNR", 8)
    message = str(info.value)
    assert "'FNR'" in message
    for name in registered_norms():
        assert repr(name) in message


def test_user_registered_name_is_usable_and_removable():
    register_norm("myLN", lambda c: LayerNorm(c))
    try:
        norm, activation = get_norm_act("myLN", 8)
        assert isinstance(norm, LayerNorm) and activation is F.relu
        assert "myLN" in registered_norms()
    finally:
        unregister_norm("myLN")
    assert "myLN" not in registered_norms()


def test_user_registered_fused_norm_gets_the_act_flag_and_options():
    calls = []

    def build(channels, act, **options):
        calls.append((channels, act, options))
        return FrozenBatchNorm2d(channels)

    register_norm("fused", build, fuses_activation=True)
    try:
        norm, activation = get_norm_act("fused", 4, act=False, eps=0.5)
    finally:
        unregister_norm("fused")
    assert calls == [(4, False, {"eps": 0.5})]
    assert activation is None and isinstance(norm, FrozenBatchNorm2d)


def test_registering_a_taken_name_needs_overwrite():
    with pytest.raises(ValueError, match="'GN' is already registered"):
        register_norm("GN", lambda c: nn.GroupNorm(8, c))


def test_registering_a_non_string_name_is_refused():
    with pytest.raises(TypeError, match="norm name must be a str"):
        register_norm(3, lambda c: nn.GroupNorm(8, c))


def test_the_registry_knows_frn_and_evonorm_classes_as_norms_wherever_they_are_built():
    types = norm_module_types()
    for cls in (FilterResponseNorm2d, FilterResponseNorm1d, TLU, EvoNormS0, EvoNormB0, LayerNorm):
        assert cls in types, cls
    assert norm_names_of(PaddingAwareFilterResponseNorm2d(4)) == ["FRN"]
    assert norm_names_of(PaddingAwareTLU(4)) == ["FRN"]
    assert norm_names_of(padding.PaddingAwareGroupNorm(2, 4)) == ["GN"]
    assert norm_names_of(nn.Conv2d(4, 4, 1)) == []


def test_only_frn_declares_parameters_of_its_own_and_config_options():
    assert norm_entry("FRN").specific_parameters == ("tau", "learned_eps")
    for name in registered_norms():
        if name != "FRN":
            assert norm_entry(name).specific_parameters == (), name
            assert norm_entry(name).config_options is None, name


def test_a_registered_name_is_a_norm_by_the_classes_its_builders_return():
    class Scale(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(channels))

    register_norm("scale", Scale)
    try:
        assert Scale not in norm_module_types()  # nothing built yet, none declared
        get_norm_act("scale", 4)
        assert Scale in norm_module_types()
        assert norm_names_of(Scale(2)) == ["scale"]
    finally:
        unregister_norm("scale")
    assert Scale not in norm_module_types()


def test_declared_classes_and_config_options_come_from_the_entry():
    class Scale(nn.Module):
        def __init__(self, channels, init=1.0):
            super().__init__()
            self.scale = nn.Parameter(torch.full((channels,), init))

    register_norm(
        "scale",
        lambda channels, act, **options: Scale(channels, **options),
        fuses_activation=True,
        norm_types=(Scale,),
        config_options=lambda cfg, fc: {"init": cfg["init"] * (2 if fc else 1)},
    )
    try:
        assert Scale in norm_module_types()
        assert norm_config_options("scale", {"init": 3.0}) == {"init": 3.0}
        assert norm_config_options("scale", {"init": 3.0}, fc=True) == {"init": 6.0}
    finally:
        unregister_norm("scale")
    assert norm_config_options("GN", {"init": 3.0}) == {}
    assert norm_config_options(lambda c: nn.GroupNorm(2, c), {}) == {}
