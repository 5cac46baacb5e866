"""In training mode an FRN or GN backbone's features for an image ignore the rest of the batch."""

from __future__ import annotations

import pytest
import torch
from detectron2.layers import ShapeSpec

from frn_det.modeling import build_frn_resnet_fpn_backbone

from .helpers import seeded_images, small_cfg


def features_alone_and_in_a_batch(norm: str) -> tuple[dict, dict]:
    """FPN features of image 0 by itself and as the first of three same-sized images."""
    # float64, so that convolution kernels picked per batch size agree to ~1e-12 and any
    # real dependence on the batch stands out.
    backbone = build_frn_resnet_fpn_backbone(small_cfg(norm), ShapeSpec(channels=3))
    backbone = backbone.double().train()
    images = seeded_images(3).double()
    with torch.no_grad():
        alone = backbone(images[:1])
        together = {k: v[:1] for k, v in backbone(images).items()}
    return alone, together


@pytest.mark.parametrize("norm", ["FRN", "GN", "FrozenBN"])
def test_features_of_an_image_do_not_change_when_other_images_join_its_batch(norm):
    alone, together = features_alone_and_in_a_batch(norm)
    for level in alone:
        torch.testing.assert_close(together[level], alone[level], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("norm", ["BN", "SyncBN"])
def test_trainable_bn_features_do_change_with_the_batch(norm):
    # The control: batch statistics make each image's features depend on the others.
    alone, together = features_alone_and_in_a_batch(norm)
    for level in alone:
        assert (together[level] - alone[level]).abs().max() > 1e-2, level
