"""frn-det's model zoo: the catalog of checkpoints its configs evaluate, and the commands
that fetch, verify and evaluate them and keep MODEL_ZOO.md in step with the catalog.

Two kinds of entries:

- detectron2's released baselines whose configs this repository carries under the same
  path (``configs/Misc/mask_rcnn_R_50_FPN_3x_gn.yaml``). Their URLs come from detectron2's
  own catalog (``detectron2.model_zoo``); their AP is what detectron2 published. detectron2
  names its files with a short commit suffix (``model_final_dc5d9e.pkl``), not a hash, so
  no SHA-256 is recorded for them until someone has checked one.
- frn-det's own checkpoints, trained by ``tools/sweep.py``. Their rows are written from the
  sweep's run folders (DONE.json, model_final.pth) by ``python -m frn_det_tools.model_zoo rows
  OUT --write``, never by hand, with the SHA-256 of the file and the command that trains it.

Commands::

    python tools/eval_zoo.py NAME [--num-gpus N] [--weights PATH] [KEY VALUE ...]
    python tools/eval_zoo.py --list
    python -m frn_det_tools.model_zoo rows OUT [OUT ...] [--url-prefix URL] [--write]
    python -m frn_det_tools.model_zoo markdown [--check | --write]

MODEL_ZOO.md is generated from the catalog (``render_markdown``); the tests check that the
two agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

with warnings.catch_warnings():
    # detectron2.model_zoo imports pkg_resources, whose deprecation notice nobody here can act on.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    from detectron2 import model_zoo as d2_model_zoo

__all__ = [
    "CATALOG",
    "DETECTRON2_BASELINES",
    "FRN_DET_CHECKPOINTS",
    "MODEL_ZOO_MD",
    "REPO_ROOT",
    "ChecksumMismatchError",
    "ModelZooError",
    "ZooEntry",
    "entries_from_sweeps",
    "eval_main",
    "eval_only_args",
    "fetch",
    "lookup",
    "main",
    "markdown_rows",
    "merge_entries",
    "python_source",
    "render_markdown",
    "run_train_net",
    "sha256_of",
    "verify",
    "write_catalog_block",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_ZOO_MD = REPO_ROOT / "MODEL_ZOO.md"
SOURCE_DETECTRON2 = "detectron2"
SOURCE_FRN_DET = "frn-det"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_BLOCK_BEGIN = "# BEGIN frn-det checkpoints"
_BLOCK_END = "# END frn-det checkpoints"
_LINE_LENGTH = 100
_HASH_CHUNK = 1 << 20


class ModelZooError(ValueError):
    """A name, file, URL or run folder the model zoo cannot use as given."""


class ChecksumMismatchError(ModelZooError):
    """A checkpoint whose SHA-256 is not the one the catalog records for it."""


@dataclass(frozen=True)
class ZooEntry:
    """One checkpoint of the catalog.

    Attributes:
        name: what ``tools/eval_zoo.py NAME`` takes.
        config: the config file it evaluates with, relative to the repository root.
        url: where the weights are fetched from: ``detectron2://``, ``https://`` (downloaded
            once into iopath's cache), ``file://`` or a path (relative to the repository
            root); None when the file is not published anywhere.
        sha256: the file's SHA-256 (64 lower-case hex digits), None where nobody has
            recorded it; when set, a file that does not match is refused.
        box_ap, mask_ap: COCO-style AP in percent on ``data``'s test set.
        source: "detectron2" (a released baseline, published AP) or "frn-det" (trained here).
        detectron2_config: detectron2's model-zoo config name, for detectron2's baselines.
        data: "train set -> test set".
        ims_per_gpu, num_gpus: the training batch, images per GPU (process) x processes.
        train_time: how long training took and on what device, as recorded.
        opts: KEY VALUE config options it was trained with, applied again at evaluation.
        reproduce: the one command that trains it.
    """

    name: str
    config: str
    url: str | None
    sha256: str | None
    box_ap: float | None
    mask_ap: float | None
    source: str
    detectron2_config: str | None = None
    data: str = "coco_2017_train -> coco_2017_val"
    ims_per_gpu: int | None = None
    num_gpus: int | None = None
    train_time: str | None = None
    opts: tuple[str, ...] = ()
    reproduce: str | None = None


def _detectron2_baseline(d2_config: str, box_ap: float, mask_ap: float | None) -> ZooEntry:
    # The URL is asked of detectron2's catalog rather than typed here, so it cannot drift
    # from the file detectron2 actually serves; the config keeps detectron2's path.
    return ZooEntry(
        name=Path(d2_config).name,
        config=f"configs/{d2_config}.yaml",
        url=d2_model_zoo.get_checkpoint_url(f"{d2_config}.yaml"),
        sha256=None,
        box_ap=box_ap,
        mask_ap=mask_ap,
        source=SOURCE_DETECTRON2,
        detectron2_config=f"{d2_config}.yaml",
        ims_per_gpu=2,
        num_gpus=8,
    )


# (detectron2 model-zoo config, box AP, mask AP): the AP detectron2 published in its
# MODEL_ZOO.md for the baselines whose configs this repository reproduces key for key
# (tests/configs checks that). Its other norm baselines (FrozenBN 2fc heads, the 9x scratch
# schedules) have no config here, so nothing here could evaluate them.
DETECTRON2_BASELINES: tuple[ZooEntry, ...] = tuple(
    _detectron2_baseline(*row)
    for row in (
        ("Misc/mask_rcnn_R_50_FPN_3x_gn", 42.6, 38.6),
        ("Misc/mask_rcnn_R_50_FPN_3x_syncbn", 41.9, 37.8),
        ("Misc/scratch_mask_rcnn_R_50_FPN_3x_gn", 39.9, 36.6),
    )
)

# BEGIN frn-det checkpoints (written by `python -m frn_det_tools.model_zoo rows OUT --write`)
FRN_DET_CHECKPOINTS: tuple[ZooEntry, ...] = (
    ZooEntry(
        name="mask_rcnn_R_18_FPN_bn_ipg1_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_bn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/bn/ipg1/seed0/model_final.pth",
        sha256="2671c2df7d0132e2a7ac3e7a20c2d9870449bce358e2a3849b5dc0d4fe0a4328",
        box_ap=5.25,
        mask_ap=4.28,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=1,
        num_gpus=1,
        train_time="7m30s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
            "TEST.PRECISE_BN.ENABLED",
            "False",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms bn --ims-per-gpu 1 --num-gpus 1 --seed 0 --output output/grid SOLVER.MAX_ITER "
            "400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50 TEST.PRECISE_BN.ENABLED False"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_bn_ipg2_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_bn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/bn/ipg2/seed0/model_final.pth",
        sha256="04cdfaff4786501f05dd8bd29eaef4252d247479cc9683a76b46841fec637898",
        box_ap=5.42,
        mask_ap=5.76,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=2,
        num_gpus=1,
        train_time="5m58s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
            "TEST.PRECISE_BN.ENABLED",
            "False",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms bn --ims-per-gpu 2 --num-gpus 1 --seed 0 --output output/grid SOLVER.MAX_ITER "
            "400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50 TEST.PRECISE_BN.ENABLED False"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_bn_ipg4_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_bn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/bn/ipg4/seed0/model_final.pth",
        sha256="b5d6eff49010289a93c294184a6be9a88ef05288308e16c6837ca30bfb005829",
        box_ap=7.23,
        mask_ap=6.42,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=4,
        num_gpus=1,
        train_time="5m16s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
            "TEST.PRECISE_BN.ENABLED",
            "False",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms bn --ims-per-gpu 4 --num-gpus 1 --seed 0 --output output/grid SOLVER.MAX_ITER "
            "400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50 TEST.PRECISE_BN.ENABLED False"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_bn_ipg8_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_bn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/bn/ipg8/seed0/model_final.pth",
        sha256="015a47c35d30fec0746ef9600d6ebca4e7b85190a90591eee4e6aca81c8b6338",
        box_ap=2.81,
        mask_ap=3.1,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=8,
        num_gpus=1,
        train_time="5m16s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
            "TEST.PRECISE_BN.ENABLED",
            "False",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms bn --ims-per-gpu 8 --num-gpus 1 --seed 0 --output output/grid SOLVER.MAX_ITER "
            "400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50 TEST.PRECISE_BN.ENABLED False"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_syncbn_ipg1_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_syncbn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/syncbn/ipg1/seed0/model_final.pth",
        sha256="d78aade19725a5180eb3d9301dd029cab97861fb28cdd7a8b0ef8cfd74c68fc7",
        box_ap=6.3,
        mask_ap=6.76,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=1,
        num_gpus=2,
        train_time="8m20s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
            "TEST.PRECISE_BN.ENABLED",
            "False",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms syncbn --ims-per-gpu 1 --num-gpus 2 --seed 0 --output output/grid "
            "SOLVER.MAX_ITER 400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50 "
            "TEST.PRECISE_BN.ENABLED False"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_syncbn_ipg2_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_syncbn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/syncbn/ipg2/seed0/model_final.pth",
        sha256="d1553b2cf31429197486bb17e7a0f1509feb2dc6e8ba7d1b68bc1cceee32fbf0",
        box_ap=6.41,
        mask_ap=6.11,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=2,
        num_gpus=2,
        train_time="6m28s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
            "TEST.PRECISE_BN.ENABLED",
            "False",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms syncbn --ims-per-gpu 2 --num-gpus 2 --seed 0 --output output/grid "
            "SOLVER.MAX_ITER 400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50 "
            "TEST.PRECISE_BN.ENABLED False"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_syncbn_ipg4_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_syncbn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/syncbn/ipg4/seed0/model_final.pth",
        sha256="eadf26170018c7a1c03de20522d1492517ca684c52cf8311859b37b119638d6f",
        box_ap=3.52,
        mask_ap=3.94,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=4,
        num_gpus=2,
        train_time="5m32s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
            "TEST.PRECISE_BN.ENABLED",
            "False",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms syncbn --ims-per-gpu 4 --num-gpus 2 --seed 0 --output output/grid "
            "SOLVER.MAX_ITER 400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50 "
            "TEST.PRECISE_BN.ENABLED False"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_syncbn_ipg8_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_syncbn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/syncbn/ipg8/seed0/model_final.pth",
        sha256="ace439a94b7b9a20aae0f8479096cb5eb7c85e3b6a796ce3678408ca7aad16c0",
        box_ap=0.39,
        mask_ap=0.22,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=8,
        num_gpus=2,
        train_time="5m23s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
            "TEST.PRECISE_BN.ENABLED",
            "False",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms syncbn --ims-per-gpu 8 --num-gpus 2 --seed 0 --output output/grid "
            "SOLVER.MAX_ITER 400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50 "
            "TEST.PRECISE_BN.ENABLED False"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_gn_ipg1_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_gn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/gn/ipg1/seed0/model_final.pth",
        sha256="39c11b6365867229fa622e832d4f3e35e1c7e55aef0341afdf109b2edb3b45a7",
        box_ap=26.83,
        mask_ap=25.81,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=1,
        num_gpus=1,
        train_time="6m48s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms gn --ims-per-gpu 1 --num-gpus 1 --seed 0 --output output/grid SOLVER.MAX_ITER "
            "400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_gn_ipg2_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_gn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/gn/ipg2/seed0/model_final.pth",
        sha256="bc7a21958151cb0eb2b860c2bfa6c8d3ecae95c3bea6d9b4ec212c2bc4f4be9e",
        box_ap=25.63,
        mask_ap=25.42,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=2,
        num_gpus=1,
        train_time="5m53s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms gn --ims-per-gpu 2 --num-gpus 1 --seed 0 --output output/grid SOLVER.MAX_ITER "
            "400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_gn_ipg4_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_gn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/gn/ipg4/seed0/model_final.pth",
        sha256="c2f97669dccd0a38d8171bcbab49c5694bb18aaf14714c25e8ef696536c59adc",
        box_ap=20.52,
        mask_ap=20.49,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=4,
        num_gpus=1,
        train_time="5m19s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms gn --ims-per-gpu 4 --num-gpus 1 --seed 0 --output output/grid SOLVER.MAX_ITER "
            "400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_gn_ipg8_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_gn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/gn/ipg8/seed0/model_final.pth",
        sha256="78b901460e94e4366b35395d6c8e66f63c0d3a2e21dbea8ad20fdbf754f72933",
        box_ap=17.04,
        mask_ap=16.74,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=8,
        num_gpus=1,
        train_time="5m38s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "SOLVER.WARMUP_ITERS",
            "50",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms gn --ims-per-gpu 8 --num-gpus 1 --seed 0 --output output/grid SOLVER.MAX_ITER "
            "400 SOLVER.STEPS '(320, 373)' SOLVER.WARMUP_ITERS 50"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_frn_ipg1_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/frn/ipg1/seed0/model_final.pth",
        sha256="fc38af81116c6fbcc92fde64aeb3d05b0c4c16b4b6c3b1830a643126a961de2c",
        box_ap=18.98,
        mask_ap=16.96,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=1,
        num_gpus=1,
        train_time="8m32s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "MODEL.FRN.AFTER_FC",
            "FRN",
            "SOLVER.WARMUP_ITERS",
            "100",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms frn --ims-per-gpu 1 --num-gpus 1 --seed 0 --output output/grid "
            "SOLVER.MAX_ITER 400 SOLVER.STEPS '(320, 373)' MODEL.FRN.AFTER_FC FRN "
            "SOLVER.WARMUP_ITERS 100"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_frn_ipg2_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/frn/ipg2/seed0/model_final.pth",
        sha256="d8df708a6a8ed2fd1dc51de67a3ffb01fb9eb07021364ab23f8f68ee2c01816c",
        box_ap=19.34,
        mask_ap=17.53,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=2,
        num_gpus=1,
        train_time="5m59s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "MODEL.FRN.AFTER_FC",
            "FRN",
            "SOLVER.WARMUP_ITERS",
            "100",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms frn --ims-per-gpu 2 --num-gpus 1 --seed 0 --output output/grid "
            "SOLVER.MAX_ITER 400 SOLVER.STEPS '(320, 373)' MODEL.FRN.AFTER_FC FRN "
            "SOLVER.WARMUP_ITERS 100"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_frn_ipg4_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/frn/ipg4/seed0/model_final.pth",
        sha256="094702e075b798bde393c5c4e8daa16a99444b4af5ed5b3f861c9cb234c6645f",
        box_ap=14.99,
        mask_ap=13.99,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=4,
        num_gpus=1,
        train_time="5m29s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "MODEL.FRN.AFTER_FC",
            "FRN",
            "SOLVER.WARMUP_ITERS",
            "100",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms frn --ims-per-gpu 4 --num-gpus 1 --seed 0 --output output/grid "
            "SOLVER.MAX_ITER 400 SOLVER.STEPS '(320, 373)' MODEL.FRN.AFTER_FC FRN "
            "SOLVER.WARMUP_ITERS 100"
        ),
    ),
    ZooEntry(
        name="mask_rcnn_R_18_FPN_frn_ipg8_seed0",
        config="configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml",
        url="output/grid/mask_rcnn_R_18_FPN/frn/ipg8/seed0/model_final.pth",
        sha256="d97d6f10e172bac51067d582fdaee157f6729ba603f24ac66c5dd91540493435",
        box_ap=11.17,
        mask_ap=10.89,
        source="frn-det",
        detectron2_config=None,
        data="frn_shapes_train -> frn_shapes_val",
        ims_per_gpu=8,
        num_gpus=1,
        train_time="4m58s (cpu)",
        opts=(
            "SOLVER.MAX_ITER",
            "400",
            "SOLVER.STEPS",
            "(320, 373)",
            "MODEL.FRN.AFTER_FC",
            "FRN",
            "SOLVER.WARMUP_ITERS",
            "100",
        ),
        reproduce=(
            "python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' "
            "--norms frn --ims-per-gpu 8 --num-gpus 1 --seed 0 --output output/grid "
            "SOLVER.MAX_ITER 400 SOLVER.STEPS '(320, 373)' MODEL.FRN.AFTER_FC FRN "
            "SOLVER.WARMUP_ITERS 100"
        ),
    ),
)
# END frn-det checkpoints


def _build_catalog(entries: Iterable[ZooEntry]) -> dict[str, ZooEntry]:
    catalog: dict[str, ZooEntry] = {}
    for entry in entries:
        if entry.name in catalog:
            raise ModelZooError(f"model-zoo name {entry.name!r} is used by two entries")
        catalog[entry.name] = entry
    return catalog


CATALOG: dict[str, ZooEntry] = _build_catalog((*DETECTRON2_BASELINES, *FRN_DET_CHECKPOINTS))


def lookup(name: str, catalog: Mapping[str, ZooEntry] | None = None) -> ZooEntry:
    """The catalog entry called ``name``.

    Raises:
        ModelZooError: for an unknown name, listing the available ones.
    """
    catalog = CATALOG if catalog is None else catalog
    if name in catalog:
        return catalog[name]
    close = difflib.get_close_matches(name, list(catalog), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    available = ", ".join(sorted(catalog)) or "none"
    raise ModelZooError(f"unknown model-zoo name {name!r}{hint}; available: {available}")


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path``, as 64 lower-case hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _local_path(location: str) -> Path:
    # file:// URLs and plain paths; a relative path means the repository root, since the
    # catalog is committed and read from wherever the command is started.
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    path = Path(location).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _retrain_hint(entry: ZooEntry) -> str:
    if not entry.reproduce:
        return ""
    return f"; it is trained by: {entry.reproduce}"


def fetch(entry: ZooEntry, weights: str | os.PathLike | None = None) -> Path:
    """The local file of ``entry``'s weights: ``weights`` when given, else the catalog's
    URL, downloaded once into iopath's cache (detectron2's PathManager) or read in place.

    Raises:
        ModelZooError: naming the file or URL that is missing or could not be downloaded.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelZooError(f"--weights {os.fspath(path)!r} for {entry.name} is not a file")
        return path
    if entry.url is None:
        raise ModelZooError(
            f"{entry.name} has no download URL in the catalog; pass its file with "
            f"--weights PATH{_retrain_hint(entry)}"
        )
    if entry.url.startswith("file://") or "://" not in entry.url:
        path = _local_path(entry.url)
        if not path.is_file():
            raise ModelZooError(
                f"the checkpoint of {entry.name}, {os.fspath(path)!r}, does not exist; pass "
                f"a copy with --weights PATH{_retrain_hint(entry)}"
            )
        return path
    from detectron2.utils.file_io import PathManager

    try:
        return Path(PathManager.get_local_path(entry.url))
    except OSError as error:
        raise ModelZooError(
            f"could not download the checkpoint of {entry.name} from {entry.url}: {error}. "
            "Download it where the network allows and pass it with --weights PATH"
        ) from error


def verify(entry: ZooEntry, path: str | os.PathLike) -> str:
    """Check ``path`` against the SHA-256 the catalog records for ``entry``; returns the
    file's SHA-256. Entries without a recorded hash pass (there is nothing to compare).

    Nothing is deleted on a mismatch: the file may be the user's own, and a cached download
    is worth inspecting before it is thrown away.

    Raises:
        ChecksumMismatchError: naming the file, the expected and the actual SHA-256.
    """
    actual = sha256_of(path)
    if entry.sha256 is not None and actual != entry.sha256.lower():
        raise ChecksumMismatchError(
            f"refusing to evaluate {os.fspath(path)!r} as {entry.name}: its SHA-256 is "
            f"{actual}, the catalog expects {entry.sha256}. The file was left where it is. "
            "If it was downloaded, delete it and run again; a checkpoint trained again is a "
            "different file, evaluate it with tools/train_net.py --eval-only MODEL.WEIGHTS "
            "PATH instead."
        )
    return actual


def eval_only_args(
    entry: ZooEntry,
    weights: str | os.PathLike,
    *,
    num_gpus: int = 1,
    dist_url: str | None = None,
    opts: Sequence[str] = (),
) -> list[str]:
    """The ``tools/train_net.py`` arguments that evaluate ``weights`` with ``entry``'s
    config: ``--eval-only``, the entry's training options, the user's ``opts``, then
    MODEL.WEIGHTS (last, so it wins) and, unless ``opts`` sets it, OUTPUT_DIR
    ``output/eval_zoo/NAME``.

    Raises:
        ModelZooError: for an odd number of ``opts`` or ``opts`` that set MODEL.WEIGHTS.
    """
    if len(opts) % 2:
        raise ModelZooError(
            f"config options must be KEY VALUE pairs, got an odd number ({len(opts)}): {list(opts)}"
        )
    keys = list(opts[::2])
    if "MODEL.WEIGHTS" in keys:
        raise ModelZooError(
            "MODEL.WEIGHTS is the catalog's checkpoint; to evaluate another file of "
            f"{entry.name}, pass it with --weights PATH"
        )
    args = ["--config-file", os.fspath(REPO_ROOT / entry.config), "--eval-only"]
    args += ["--num-gpus", str(num_gpus)]
    if dist_url is not None:
        args += ["--dist-url", dist_url]
    args += [*entry.opts, *opts]
    if "OUTPUT_DIR" not in keys:
        args += ["OUTPUT_DIR", os.fspath(Path("output") / "eval_zoo" / entry.name)]
    return [*args, "MODEL.WEIGHTS", os.fspath(weights)]


def run_train_net(argv: Sequence[str]) -> None:
    """Run ``tools/train_net.py argv`` in this process (and the processes it launches):
    ``frn_det.engine.cli.main`` under frn-det's launch, as the script does."""
    from frn_det.engine import cli

    cli.run(argv)


def _format_ap(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f}" if round(value, 1) == value else f"{value:.2f}"


def _catalog_table(catalog: Mapping[str, ZooEntry]) -> str:
    rows = [
        "| name | source | config | box AP | mask AP | SHA-256 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for entry in catalog.values():
        rows.append(
            f"| {entry.name} | {entry.source} | {entry.config} | {_format_ap(entry.box_ap)} | "
            f"{_format_ap(entry.mask_ap)} | {entry.sha256 or '-'} |"
        )
    return "\n".join(rows)


def eval_argument_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/eval_zoo.py``."""
    parser = argparse.ArgumentParser(
        prog="eval_zoo.py",
        description=(
            "Evaluate a model-zoo checkpoint (MODEL_ZOO.md) with its config: fetch it "
            "(downloads are cached), check its SHA-256 where the catalog records one, then "
            "run tools/train_net.py --eval-only. KEY VALUE pairs go to the config."
        ),
        usage="%(prog)s [-h] [--list] [--weights PATH] [--num-gpus N] [--dist-url URL] "
        "NAME [KEY VALUE ...]",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="a name from --list")
    parser.add_argument("--list", action="store_true", help="list the catalog and exit")
    parser.add_argument(
        "--weights", metavar="PATH", help="a local copy of the checkpoint instead of its URL"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) to evaluate on")
    parser.add_argument(
        "--dist-url",
        default=None,
        help="torch.distributed init URL for --num-gpus > 1 (default: a free local port)",
    )
    return parser


def eval_main(
    argv: Sequence[str] | None = None,
    catalog: Mapping[str, ZooEntry] | None = None,
    evaluate: Callable[[Sequence[str]], None] | None = None,
) -> int:
    """``tools/eval_zoo.py``: fetch, verify and evaluate a catalog entry; returns the exit
    status. ``evaluate`` runs the train_net arguments (default ``run_train_net``)."""
    catalog = CATALOG if catalog is None else catalog
    parser = eval_argument_parser()
    # KEY VALUE pairs may come before or after the flags (``NAME --num-gpus 8 KEY VALUE``,
    # ``NAME KEY VALUE --weights F``), which argparse's REMAINDER would swallow as options.
    args, opts = parser.parse_known_args(argv)
    flags = [item for item in opts if item.startswith("--")]
    if flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    args.opts = opts
    if args.list:
        print(_catalog_table(catalog))
        return 0
    if args.name is None:
        parser.error(f"NAME is required; available: {', '.join(sorted(catalog)) or 'none'}")
    if args.num_gpus < 1:
        parser.error(f"--num-gpus must be an integer >= 1, got {args.num_gpus}")
    try:
        entry = lookup(args.name, catalog)
        path = fetch(entry, args.weights)
        actual = verify(entry, path)
        dist_url = args.dist_url or ("auto" if args.num_gpus > 1 else None)
        train_net_args = eval_only_args(
            entry, path, num_gpus=args.num_gpus, dist_url=dist_url, opts=args.opts
        )
    except ModelZooError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if entry.sha256 is None:
        print(
            f"{entry.name}: the catalog records no SHA-256 to check (detectron2's file names "
            f"carry a commit suffix, not a hash); {os.fspath(path)} has SHA-256 {actual}"
        )
    else:
        print(f"{entry.name}: SHA-256 {actual} matches the catalog")
    print("tools/train_net.py " + shlex.join(train_net_args))
    (evaluate or run_train_net)(train_net_args)
    return 0


# ---------------------------------------------------------------------------------------
# Sweep folders -> catalog entries -> MODEL_ZOO.md


def _repo_relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return os.fspath(path.resolve())


def _format_seconds(seconds: float) -> str:
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _train_time(done: Mapping[str, Any], device: str) -> str | None:
    seconds = done.get("seconds")
    if not seconds:
        return None
    schedule = done.get("schedule", {})
    full = schedule.get("max_iter", 0) * schedule.get("ims_per_batch", 0)
    # The sweep times only the session that finished a run: a resumed run trained part of
    # its images earlier, in time nobody recorded.
    if done.get("images_trained", full) < full:
        return f">= {_format_seconds(seconds)} ({device}; resumed, earlier sessions not timed)"
    return f"{_format_seconds(seconds)} ({device})"


def _ap(results: Mapping[str, Any], metric: str) -> float | None:
    from frn_det_tools.summarize import metric_value

    value = metric_value(results, metric)
    if value is None or math.isnan(value):
        return None
    return round(value, 2)


def _template(config: str, norm: str, stem: str) -> str:
    from frn_det_tools.sweep import config_stem

    folder, _, file_name = config.rpartition("/")
    at = file_name.rfind(norm)
    template = file_name[:at] + "{norm}" + file_name[at + len(norm) :] if at >= 0 else ""
    if not template or config_stem(template) != stem:
        raise ModelZooError(
            f"config {config!r} of norm {norm!r} does not name its norm the way the sweep's "
            f"templates do (config stem {stem!r}); cannot write its sweep command"
        )
    return f"{folder}/{template}" if folder else template


def _run_opts(train_net_args: Sequence[str]) -> tuple[str, ...]:
    from frn_det.engine import argument_parser

    opts = list(argument_parser().parse_args(list(train_net_args)).opts or [])
    kept: list[str] = []
    for key, value in zip(opts[::2], opts[1::2], strict=True):
        # The sweep sets these per run from its own arguments.
        if key not in ("SEED", "OUTPUT_DIR", "SOLVER.IMS_PER_GPU"):
            kept += [key, value]
    return tuple(kept)


def entry_from_run(folder: str | os.PathLike, url_prefix: str | None = None) -> ZooEntry:
    """The catalog entry of one finished sweep run (a folder with DONE.json and
    model_final.pth, laid out ``OUT/<config stem>/<norm>/ipg<N>/seed<S>/``).

    Its URL is ``url_prefix + NAME.pth`` when the file is published there, else the path of
    model_final.pth (relative to the repository root when inside it), which the entry's
    ``reproduce`` command writes again.

    Raises:
        ModelZooError: naming the folder and what it lacks.
    """
    from frn_det_tools.sweep import DONE_FILE, FINAL_MODEL

    folder = Path(folder)
    done_file, model = folder / DONE_FILE, folder / FINAL_MODEL
    if not done_file.is_file() or not model.is_file():
        raise ModelZooError(
            f"run folder {os.fspath(folder)!r} has no {DONE_FILE} and {FINAL_MODEL}; only runs "
            "the sweep finished can be listed"
        )
    try:
        done = json.loads(done_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelZooError(f"cannot read {os.fspath(done_file)!r}: {error}") from error
    config = _repo_relative(Path(done["config"]))
    if not config.startswith("configs/"):
        raise ModelZooError(
            f"run {os.fspath(folder)!r} trained config {done['config']!r}, which is not under "
            f"{os.fspath(REPO_ROOT / 'configs')}; the catalog lists this repository's configs"
        )
    try:
        run_cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        run_cfg = {}
    datasets = run_cfg.get("DATASETS", {})
    data = " -> ".join(", ".join(datasets.get(k) or ["?"]) for k in ("TRAIN", "TEST"))
    device = run_cfg.get("MODEL", {}).get("DEVICE", "device not recorded")
    name = f"{Path(config).stem}_ipg{done['ims_per_gpu']}_seed{done['seed']}"
    opts = _run_opts(done["train_net_args"])
    sweep_root = folder.resolve().parents[3]
    command = [
        "python",
        "tools/sweep.py",
        "--configs",
        _template(config, done["norm"], done["config_stem"]),
        "--norms",
        done["norm"],
        "--ims-per-gpu",
        str(done["ims_per_gpu"]),
        "--num-gpus",
        str(done["num_gpus"]),
        "--seed",
        str(done["seed"]),
        "--output",
        _repo_relative(sweep_root),
        *opts,
    ]
    return ZooEntry(
        name=name,
        config=config,
        url=url_prefix + name + ".pth" if url_prefix else _repo_relative(model),
        sha256=sha256_of(model),
        box_ap=_ap(done.get("results", {}), "bbox/AP"),
        mask_ap=_ap(done.get("results", {}), "segm/AP"),
        source=SOURCE_FRN_DET,
        data=data,
        ims_per_gpu=int(done["ims_per_gpu"]),
        num_gpus=int(done["num_gpus"]),
        train_time=_train_time(done, device),
        opts=opts,
        reproduce=shlex.join(command),
    )


def entries_from_sweeps(
    outputs: Sequence[str | os.PathLike], url_prefix: str | None = None
) -> tuple[list[ZooEntry], list[str]]:
    """The catalog entries of every finished run under ``outputs`` (sweep roots or run
    folders), and a note for each run skipped because it has not finished.

    Raises:
        ModelZooError: for a folder that does not exist, or two runs with one name.
    """
    from frn_det_tools.sweep import DONE_FILE, find_runs

    entries: dict[str, tuple[ZooEntry, Path]] = {}
    skipped = []
    for output in outputs:
        root = Path(output)
        if not root.is_dir():
            raise ModelZooError(f"sweep output {os.fspath(root)!r} is not a folder")
        folders = [root] if (root / DONE_FILE).is_file() else [f for _, f in find_runs(root)]
        for folder in folders:
            if not (folder / DONE_FILE).is_file():
                skipped.append(f"{os.fspath(folder)}: not finished (no {DONE_FILE}), skipped")
                continue
            entry = entry_from_run(folder, url_prefix)
            if entry.name in entries:
                raise ModelZooError(
                    f"runs {os.fspath(entries[entry.name][1])!r} and {os.fspath(folder)!r} "
                    f"would both be listed as {entry.name!r}; pass one sweep at a time"
                )
            entries[entry.name] = (entry, folder)
    return [entry for entry, _ in entries.values()], skipped


def markdown_rows(entries: Iterable[ZooEntry]) -> list[str]:
    """The rows of MODEL_ZOO.md's frn-det table for ``entries``."""
    rows = []
    for e in entries:
        batch = f"{e.ims_per_gpu} x {e.num_gpus}" if e.ims_per_gpu and e.num_gpus else "-"
        rows.append(
            f"| {e.name} | [{e.config}]({e.config}) | {e.data} | {batch} | "
            f"{_format_ap(e.box_ap)} | {_format_ap(e.mask_ap)} | {e.train_time or '-'} | "
            f"`{e.sha256 or '-'}` |"
        )
    return rows


_INTRO = """\
# frn-det model zoo

<!-- Generated from the catalog in frn_det_tools/model_zoo.py by
`python -m frn_det_tools.model_zoo markdown --write`; edit the catalog, not this file.
tests/test_model_zoo.py checks that the two agree. -->

Every checkpoint listed here is evaluated by one command:

```bash
python tools/eval_zoo.py NAME [--num-gpus N] [--weights PATH] [KEY VALUE ...]
python tools/eval_zoo.py --list        # the names
```

It fetches the checkpoint (detectron2's PathManager: `detectron2://` and `https://` URLs are
downloaded once into iopath's cache; `--weights PATH` takes a local copy instead), checks
its SHA-256 where the catalog records one, refusing a file that does not match (the file is
left in place), and runs `tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS
FILE` with the listed config. Results go to `output/eval_zoo/NAME` unless `OUTPUT_DIR` is
given. COCO entries need COCO 2017 under `$DETECTRON2_DATASETS` (detectron2's layout).
"""

_D2_SECTION = """\
## detectron2 baselines evaluated with this repository's configs

detectron2's released checkpoints whose configs this repository carries under detectron2's
own path, key for key (`tests/configs` checks it); for these norms frn-det's components
build exactly detectron2's modules, so the checkpoints load unchanged. URLs come from
detectron2's catalog (`detectron2.model_zoo.get_checkpoint_url`). Box and mask AP are the
numbers detectron2 published (COCO 2017 val, trained on 8 GPUs x 2 images), not measured
here. detectron2's file names end in a short commit id, not a hash, so no SHA-256 is recorded
for them; `eval_zoo.py` prints the SHA-256 of the file it evaluated.

"""
_D2_HEADER = (
    "| name | config | detectron2 model-zoo config | box AP | mask AP | images/GPU x GPUs "
    "| checkpoint | SHA-256 |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
)

_FRN_SECTION = """\
## frn-det checkpoints

Trained here by `tools/sweep.py` (one run per norm x images per GPU x seed). The rows are
written from the sweep's run folders, never by hand: name, config, data (train -> test set),
batch, box and mask AP from the run's DONE.json, training time as the sweep recorded it,
and the SHA-256 of its model_final.pth. Fill or update them with:

```bash
python tools/sweep.py --configs 'configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml' \\
    --norms bn,syncbn,gn,frn --norm-gpus syncbn=2 --ims-per-gpu 1,2,4,8 --output output/zoo
python -m frn_det_tools.model_zoo rows output/zoo --write
```

`rows OUT` alone prints the rows and catalog entries without writing; `--url-prefix URL`
records `URL/NAME.pth` as the download location once the files are published (otherwise
the path of model_final.pth, which the entry's command writes again). A checkpoint trained
again is not the same file: evaluate it with `tools/train_net.py --eval-only`.
"""

_FRN_EMPTY = (
    "None yet: the sweep grid has not been run, and no numbers are reported until it has.\n"
)


def render_markdown(catalog: Mapping[str, ZooEntry] | None = None) -> str:
    """MODEL_ZOO.md for ``catalog`` (default: the catalog)."""
    catalog = CATALOG if catalog is None else catalog
    d2 = [e for e in catalog.values() if e.source == SOURCE_DETECTRON2]
    ours = [e for e in catalog.values() if e.source == SOURCE_FRN_DET]
    d2_rows = []
    for e in d2:
        file_name = (e.url or "-").rsplit("/", 1)[-1]
        d2_rows.append(
            f"| {e.name} | [{e.config}]({e.config}) | {e.detectron2_config} | "
            f"{_format_ap(e.box_ap)} | {_format_ap(e.mask_ap)} | {e.ims_per_gpu} x "
            f"{e.num_gpus} | [{file_name}]({e.url}) | {e.sha256 or 'not recorded'} |"
        )
    parts = [_INTRO, _D2_SECTION + _D2_HEADER + "\n".join(d2_rows) + "\n", _FRN_SECTION]
    if ours:
        header = (
            "| name | config | data | images/GPU x GPUs | box AP | mask AP | training time "
            "| SHA-256 of the checkpoint |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        )
        parts.append(header + "\n".join(markdown_rows(ours)) + "\n")
        parts.append(
            "### Reproducing them\n\n"
            + "\n".join(f"- `{e.name}`: `{e.reproduce}`" for e in ours if e.reproduce)
            + "\n"
        )
    else:
        parts.append(_FRN_EMPTY)
    return "\n".join(parts)


def _py_str(text: str) -> str:
    # The literal ruff format writes: double quotes unless they would need escaping.
    if '"' in text and "'" not in text:
        return repr(text)
    return json.dumps(text, ensure_ascii=False)


def _py_value(value: Any, indent: int, room: int) -> str:
    # A literal that ruff format leaves as it is: long strings split at spaces into an
    # implicit concatenation in parentheses, one piece per line.
    inner = " " * (indent + 4)
    if isinstance(value, tuple):
        if not value:
            return "()"
        item_room = _LINE_LENGTH - len(inner) - 1
        items = "".join(f"{inner}{_py_value(v, indent + 4, item_room)},\n" for v in value)
        return "(\n" + items + " " * indent + ")"
    if not isinstance(value, str):
        return repr(value)
    if len(_py_str(value)) <= room:
        return _py_str(value)
    width = _LINE_LENGTH - len(inner)
    pieces, current = [], ""
    for word in re.split(r"(?<= )", value):
        if current and len(_py_str(current + word)) > width:
            pieces.append(current)
            current = ""
        current += word
    pieces.append(current)
    return "(\n" + "".join(f"{inner}{_py_str(p)}\n" for p in pieces) + " " * indent + ")"


def python_source(entries: Sequence[ZooEntry]) -> str:
    """The ``FRN_DET_CHECKPOINTS = (...)`` statement listing ``entries``, formatted as
    ruff formats it."""
    if not entries:
        return "FRN_DET_CHECKPOINTS: tuple[ZooEntry, ...] = ()\n"
    lines = ["FRN_DET_CHECKPOINTS: tuple[ZooEntry, ...] = ("]
    for entry in entries:
        lines.append("    ZooEntry(")
        for f in dataclasses.fields(entry):
            key = f"        {f.name}="
            lines.append(
                key + _py_value(getattr(entry, f.name), 8, _LINE_LENGTH - len(key) - 1) + ","
            )
        lines.append("    ),")
    lines.append(")")
    return "\n".join(lines) + "\n"


def merge_entries(old: Sequence[ZooEntry], new: Sequence[ZooEntry]) -> list[ZooEntry]:
    """``old`` with entries of the same name replaced by ``new``'s, then ``new``'s others."""
    fresh = {e.name: e for e in new}
    merged = [fresh.pop(e.name, e) for e in old]
    return merged + list(fresh.values())


def write_catalog_block(path: str | os.PathLike, entries: Sequence[ZooEntry]) -> None:
    """Replace the FRN_DET_CHECKPOINTS block of the source file ``path`` by ``entries``.

    Raises:
        ModelZooError: when ``path`` lacks the block's BEGIN/END marker lines.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    begin = [i for i, line in enumerate(lines) if line.startswith(_BLOCK_BEGIN)]
    end = [i for i, line in enumerate(lines) if line.startswith(_BLOCK_END)]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        raise ModelZooError(
            f"{os.fspath(path)} must hold one line starting {_BLOCK_BEGIN!r} and, after it, "
            f"one starting {_BLOCK_END!r}"
        )
    new = [*lines[: begin[0] + 1], python_source(entries), *lines[end[0] :]]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(new), encoding="utf-8")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def argument_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m frn_det_tools.model_zoo``."""
    parser = argparse.ArgumentParser(
        prog="python -m frn_det_tools.model_zoo",
        description="Keep frn-det's model-zoo catalog and MODEL_ZOO.md in step.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rows = sub.add_parser(
        "rows",
        help="catalog entries and MODEL_ZOO.md rows of the finished runs of sweeps",
        description=(
            "Print the catalog entries and MODEL_ZOO.md rows of every finished run (DONE.json "
            "and model_final.pth) under the sweep folders: SHA-256 of model_final.pth, AP from "
            "DONE.json, images per GPU, training time and the command that trains it."
        ),
    )
    rows.add_argument("outputs", nargs="+", metavar="OUT", help="sweep roots or run folders")
    rows.add_argument(
        "--url-prefix",
        metavar="URL",
        help="where the checkpoints are published; the URL of each is URL/NAME.pth",
    )
    rows.add_argument(
        "--write",
        action="store_true",
        help="also add them to the catalog in frn_det_tools/model_zoo.py (replacing entries of the "
        "same name) and regenerate MODEL_ZOO.md",
    )
    markdown = sub.add_parser("markdown", help="MODEL_ZOO.md from the catalog")
    mode = markdown.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if MODEL_ZOO.md differs")
    mode.add_argument("--write", action="store_true", help="write MODEL_ZOO.md")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    source: str | os.PathLike = __file__,
    markdown_path: str | os.PathLike = MODEL_ZOO_MD,
) -> int:
    """``python -m frn_det_tools.model_zoo``; returns the exit status. ``source`` and
    ``markdown_path`` are the files ``--write`` changes."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    markdown_path = Path(markdown_path)
    if args.command == "markdown":
        text = render_markdown()
        if args.write:
            _write_text(markdown_path, text)
            print(f"wrote {markdown_path}")
            return 0
        if args.check:
            current = markdown_path.read_text(encoding="utf-8") if markdown_path.is_file() else ""
            if current != text:
                print(
                    f"{markdown_path} differs from the catalog; run "
                    "python -m frn_det_tools.model_zoo markdown --write",
                    file=sys.stderr,
                )
                return 1
            return 0
        print(text, end="")
        return 0
    try:
        entries, skipped = entries_from_sweeps(args.outputs, args.url_prefix)
    except ModelZooError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for note in skipped:
        print(f"note: {note}", file=sys.stderr)
    if not entries:
        print("no finished run found; nothing to list", file=sys.stderr)
        return 1
    print("\n".join(markdown_rows(entries)))
    print()
    print(python_source(entries), end="")
    if args.write:
        merged = merge_entries(FRN_DET_CHECKPOINTS, entries)
        catalog = _build_catalog((*DETECTRON2_BASELINES, *merged))
        write_catalog_block(source, merged)
        _write_text(markdown_path, render_markdown(catalog))
        print(f"wrote {len(entries)} entries to {source} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
