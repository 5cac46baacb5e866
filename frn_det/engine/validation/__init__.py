"""Checks that turn bad input into one clear error before training starts.

detectron2 finds most mistakes late and deep: a misspelled config key is a bare
``KeyError``, an unknown norm name fails while the model is built, a batch that the
processes cannot share is an ``assert`` inside the data loader, and a missing or truncated
annotation file fails after the model is built (or, for the test set, after training).
Here every such mistake raises ``InputError`` at config/setup time, naming the thing, the
value received and what is accepted, with the closest valid name where there is one.

- ``config_file``: ``load_config`` (defaults + frn-det's keys + a YAML file + KEY VALUE
  options), ``explain_config_error`` (the same explanations for errors raised by a
  user's own ``cfg.merge_from_file`` / ``merge_from_list``) and ``check_config_options``
  (KEY VALUE options in pairs, keys first, wherever a command or record holds them).
- ``config_values``: ``check_config``: frn-det's keys present, every NORM key a
  registered norm, every component registered, values in their accepted ranges and sets
  (``check_values``), and a batch the processes can share (``check_batch``).
- ``datasets``: ``check_datasets``: every dataset a run reads is registered and, for
  COCO-format ones, its annotation file and image folder are usable and hold every image
  the file lists.
- ``errors``: ``InputError`` and ``closest`` (the "did you mean" of the messages).

The command line's own checks (launch flags, OUTPUT_DIR, the checkpoint a run starts
from) are in ``frn_det.engine.cli``, which builds the model to check the checkpoint.
"""

from .config_file import (
    check_config_options,
    config_options_problem,
    explain_config_error,
    load_config,
)
from .config_values import (
    AMP_PRECISIONS,
    LR_SCHEDULERS,
    RESNET_DEPTHS,
    check_batch,
    check_components,
    check_config,
    check_frn_keys,
    check_norms,
    check_values,
)
from .datasets import DATASETS_DOC, check_datasets
from .errors import InputError, closest

__all__ = [
    "AMP_PRECISIONS",
    "DATASETS_DOC",
    "LR_SCHEDULERS",
    "RESNET_DEPTHS",
    "InputError",
    "check_batch",
    "check_components",
    "check_config",
    "check_config_options",
    "check_datasets",
    "check_frn_keys",
    "check_norms",
    "check_values",
    "closest",
    "config_options_problem",
    "explain_config_error",
    "load_config",
]
