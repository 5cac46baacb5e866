"""Meta-architectures that tell padding-aware layers which pixels of the batch are images.

detectron2's meta-architectures pad their images into one tensor and give the backbone
only that tensor. These subclasses change nothing else: ``forward`` and ``inference`` run
inside a ``padding_scope`` and ``preprocess_image`` records the ``ImageList``'s sizes in it,
so the layers of ``frn_det.layers.padding`` can read them (see that module for why a
scope and not an argument). Without padding-aware layers nothing reads the sizes and the
models compute exactly detectron2's.
"""

from __future__ import annotations

from typing import Any

from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch import GeneralizedRCNN
from detectron2.structures import ImageList

from ..layers.padding import padding_scope, record_image_sizes

__all__ = ["FRNGeneralizedRCNN", "RecordsImageSizes"]


class RecordsImageSizes:
    """Mixin for a detectron2 meta-architecture with ``preprocess_image`` -> ``ImageList``."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with padding_scope():
            return super().forward(*args, **kwargs)

    def inference(self, *args: Any, **kwargs: Any) -> Any:
        with padding_scope():
            return super().inference(*args, **kwargs)

    def preprocess_image(self, *args: Any, **kwargs: Any) -> ImageList:
        images = super().preprocess_image(*args, **kwargs)
        record_image_sizes(images.image_sizes, images.tensor.shape[-2:])
        return images


@META_ARCH_REGISTRY.register()
class FRNGeneralizedRCNN(RecordsImageSizes, GeneralizedRCNN):
    """detectron2's ``GeneralizedRCNN`` that records its batch's image sizes (see module)."""
