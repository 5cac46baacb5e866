"""The layers' public constructors and register_norm refuse bad arguments up front, by name."""

from __future__ import annotations

import pytest

from frn_det.layers import (
    TLU,
    FilterResponseNorm1d,
    FilterResponseNorm2d,
    PaddingAwareTLU,
    register_norm,
    registered_norms,
)

NUM_FEATURES = "num_features must be an integer >= 1"
EPS = "eps must be a finite number > 0"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FilterResponseNorm2d(0), f"FilterResponseNorm2d: {NUM_FEATURES} .* got 0"),
        (lambda: FilterResponseNorm1d(-3), f"FilterResponseNorm1d: {NUM_FEATURES} .* got -3"),
        (lambda: FilterResponseNorm2d(True), f"{NUM_FEATURES} .* got True"),
        (lambda: FilterResponseNorm2d(8.0), f"{NUM_FEATURES} .* got 8.0"),
        (lambda: FilterResponseNorm2d(8, eps=-1), rf"FilterResponseNorm2d\(8\): {EPS}"),
        (lambda: FilterResponseNorm2d(8, eps=0.0), EPS),
        (lambda: FilterResponseNorm2d(8, eps=float("nan")), EPS),
        (lambda: FilterResponseNorm2d(8, eps="1e-6"), EPS),
        (lambda: TLU(0), f"TLU: {NUM_FEATURES}"),
        (lambda: PaddingAwareTLU(0), f"PaddingAwareTLU: {NUM_FEATURES}"),
    ],
)
def test_frn_layers_refuse_bad_constructor_arguments_by_name(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_register_norm_refuses_a_builder_that_is_not_callable():
    with pytest.raises(TypeError, match=r"register_norm\('x'\): builder must be callable"):
        register_norm("x", 42)
    with pytest.raises(TypeError, match="padding_aware must be callable .* str 'yes'"):
        register_norm("x", lambda c: None, padding_aware="yes")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"norm_types": (int,)}, TypeError, "norm_types must hold nn.Module subclasses, got type"),
        ({"specific_parameters": "tau"}, TypeError, r"got the str 'tau'; write \('tau',\)"),
        ({"specific_parameters": ("norm.tau",)}, ValueError, "without dots.*got 'norm.tau'"),
        ({"config_options": {"eps": 1}}, TypeError, r"config_options must be callable"),
    ],
)
def test_register_norm_refuses_bad_declarations_by_name(arguments, error, message):
    with pytest.raises(error, match=message):
        register_norm("x", lambda c: None, **arguments)
    assert "x" not in registered_norms()
