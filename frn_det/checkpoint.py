"""A detectron2 checkpointer that survives being killed and says what is wrong with a file.

Multi-day runs on shared clusters get killed (preemption, OOM killer, SIGKILL from a
scheduler) at arbitrary moments, also while a checkpoint is being written. detectron2's
``DetectionCheckpointer`` writes ``model_XXXXXXX.pth`` and ``last_checkpoint`` in place,
so a kill at the wrong moment leaves a truncated checkpoint that ``last_checkpoint`` may
already name, and ``--resume`` then fails on it. ``SafeCheckpointer`` differs in:

- writing: every file is written to a temporary file in the same folder, flushed,
  fsynced and renamed over its final name, then the folder is fsynced
  (``frn_det.file_io.atomic_write``); ``last_checkpoint`` is updated, the same way, only
  after the checkpoint is complete. A checkpoint whose model holds NaN or Inf is refused,
  so a diverged model never replaces a good one.
- reading: ``.pth`` files are read with ``torch.load(weights_only=True)``, which refuses
  pickled code; detectron2 model-zoo ``.pkl`` files (pickled dicts of numpy arrays) are
  read by detectron2's own code. A missing, empty, truncated or foreign file raises
  ``CorruptCheckpointError`` naming the file and what is wrong with it.
- resuming: ``resume_or_load(resume=True)`` raises ``CheckpointShapeError`` listing every
  tensor whose shape differs from the model (a run resumed with another config), falls
  back to the newest older checkpoint that loads when the one ``last_checkpoint`` names is
  corrupt, and removes temporary files that killed processes left behind.
- norms: layers of a norm that has parameters of its own (declared in its registry entry,
  ``register_norm(specific_parameters=...)``: FRN's tau and learned eps) take nothing from
  a checkpoint of another norm, and their own parameters are reported as what such a
  checkpoint lacks, not as missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import Checkpointer, _IncompatibleKeys
from torch import nn

from .file_io import atomic_write, atomic_write_bytes, stale_temporary_files
from .layers.norm_act import norm_entry, norm_names_of

__all__ = [
    "SAFE_GLOBALS",
    "CheckpointError",
    "CheckpointKeysError",
    "CheckpointShapeError",
    "CorruptCheckpointError",
    "DIVERGENCE_ADVICE",
    "SafeCheckpointer",
    "NonFiniteCheckpointError",
    "norm_specific_keys",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
"""The file in the output folder that names the newest complete checkpoint."""

# torch.load(weights_only=True) accepts tensors and plain Python containers by default,
# which is all detectron2 stores in its own checkpoints (the iteration counter, the
# optimizer's and the LR scheduler's state dicts are ints, floats, lists and dicts).
# detectron2 also accepts state dicts of numpy arrays (what converted model-zoo weights
# hold) and numpy scalars may end up in extra state: these rebuild data, not code.
SAFE_GLOBALS: tuple[Any, ...] = (
    np.core.multiarray._reconstruct,
    np.core.multiarray.scalar,
    np.ndarray,
    np.dtype,
    *(
        type(np.dtype(t))
        for t in (np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64)
        + (np.float16, np.float32, np.float64)
    ),
)
"""The globals, beyond torch's defaults, that frn-det lets a weights-only load rebuild."""

_ZIP_MAGIC = b"PK\x03\x04"
_NUMBERED = re.compile(r"^(?P<prefix>.+)_(?P<iter>\d{7})\.pth$")
_MAX_LISTED = 20


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded into the model as asked."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file that is missing, empty, truncated or not a checkpoint at all."""


class CheckpointShapeError(CheckpointError):
    """A checkpoint whose tensors do not have the model's shapes, when resuming or
    evaluating (``strict``)."""


class CheckpointKeysError(CheckpointError):
    """A checkpoint that lacks tensors of the model, when evaluating (``strict``)."""


class NonFiniteCheckpointError(FloatingPointError):
    """A model holding NaN or Inf, which is never written over a good checkpoint."""


DIVERGENCE_ADVICE = "Lower the learning rate or lengthen the warm-up and train again"
"""What a ``NonFiniteCheckpointError`` advises when the caller names no config keys."""


def _is_local(path: str) -> bool:
    return "://" not in path


def _format_shapes(incorrect: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> str:
    rows = [
        f"  {key}: {tuple(ckpt)} in the checkpoint, {tuple(model)} in the model"
        for key, ckpt, model in incorrect
    ]
    if len(rows) > _MAX_LISTED:
        rows = rows[:_MAX_LISTED] + [f"  ... and {len(rows) - _MAX_LISTED} more"]
    return "\n".join(rows)


def _describe_unreadable(path: str, error: BaseException) -> str:
    """Why ``path`` could not be read, for a person: what the file is and what is wrong."""
    text = str(error)
    # torch wraps what its weights-only unpickler met in paragraphs of advice that do not
    # apply to a file that is not a checkpoint; keep what it met.
    met = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", text, re.S)
    cause = " ".join(f"{type(error).__name__}: {met.group(1) if met else text}".split())
    if len(cause) > 200:
        cause = cause[:200] + "..."
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as os_error:
        return f"checkpoint {path} cannot be read ({os_error})"
    if size == 0:
        return f"checkpoint {path} is empty (0 bytes); it was never written completely"
    if path.endswith(".pkl"):
        return (
            f"checkpoint {path} is truncated or not a pickled detectron2 model-zoo file "
            f"({size} bytes; {cause})"
        )
    if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        detail = f"zip archive error: no end-of-archive record in its {size} bytes"
    elif head.startswith(_ZIP_MAGIC):
        detail = f"zip archive error in its {size} bytes"
    else:
        detail = f"not a zip archive: it starts with {head!r}"
    return f"checkpoint {path} is truncated or not a PyTorch checkpoint ({detail}; {cause})"


def _describe_refused(path: str, error: BaseException) -> str:
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    what = f"the global {match.group(1)}" if match else "objects"
    return (
        f"checkpoint {path} holds {what}, which torch.load(weights_only=True) refuses to "
        "rebuild: frn-det loads tensors, numpy arrays and plain Python containers "
        "(frn_det.checkpoint.SAFE_GLOBALS). Re-save the file with only those, e.g. "
        'torch.save({"model": model.state_dict()}, path), from a source you trust'
    )


def _own_names(module: nn.Module) -> set[str]:
    """Names of ``module``'s own parameters and buffers (not its children's)."""
    return {name for name, _ in module.named_parameters(recurse=False)} | {
        name for name, _ in module.named_buffers(recurse=False)
    }


def _layers_of_norms_with_own_parameters(model: nn.Module) -> dict[str, dict[str, nn.Module]]:
    """Norm name -> {module name: module} of the model's layers whose registered norm
    declares parameters of its own (``register_norm(specific_parameters=...)``)."""
    layers: dict[str, dict[str, nn.Module]] = defaultdict(dict)
    for name, module in model.named_modules():
        for norm in norm_names_of(module):
            if norm_entry(norm).specific_parameters:
                layers[norm][name] = module
                break
    return dict(layers)


def norm_specific_keys(model: nn.Module) -> dict[str, str]:
    """State-dict key -> norm name, for every parameter and buffer of ``model``'s norm layers
    that is specific to their norm: what a checkpoint of another norm lacks.

    The names come from each norm's registry entry (``register_norm(specific_parameters=
    ...)``), e.g. ``backbone.res2.0.conv1.norm.tau`` -> "FRN".
    """
    return {
        key: norm
        for norm, layers in _layers_of_norms_with_own_parameters(model).items()
        for key in _specific_keys(norm, layers)
    }


def _specific_keys(norm: str, layers: Mapping[str, nn.Module]) -> list[str]:
    """The keys of ``norm``'s specific parameters that its ``layers`` (name -> module) have."""
    specific = set(norm_entry(norm).specific_parameters)
    return [
        f"{name}.{leaf}" if name else leaf
        for name, module in layers.items()
        for leaf in sorted(_own_names(module) & specific)
    ]


def _drop_other_norms_state(
    model: nn.Module, state: dict[str, Any], from_caffe2: bool
) -> dict[str, list[str]]:
    """Remove from ``state`` what another norm stored under the names of the model's layers
    of a norm with parameters of its own; returns {norm: removed keys} for each norm whose
    layers the checkpoint is judged another norm's for.

    FRN's gamma and beta are called ``weight`` and ``bias``, like BN's. A BN-trained
    checkpoint (detectron2's ImageNet R-50 for the FRN configs' initialisation) would
    otherwise put BN's scale and bias into FRN layers, whose inputs are not mean-centred:
    its beta (up to several units) and folded scale make a poor start. For each norm whose
    entry declares specific parameters, the checkpoint is taken for another norm's when it
    is a Caffe2 model-zoo file, holds at one of that norm's layers a tensor neither the
    layer nor the norm has (BN's ``running_mean``), or holds none of the specific
    parameters that the model's layers of that norm have (FRN's ``tau``). Those layers then
    keep their fresh parameters.
    """
    other: dict[str, list[str]] = {}
    for norm, layers in _layers_of_norms_with_own_parameters(model).items():
        specific = set(norm_entry(norm).specific_parameters)
        own = {name: _own_names(module) for name, module in layers.items()}
        at_layers, strangers = [], False
        for key in state:
            layer, _, leaf = key.rpartition(".")
            if layer in own:
                at_layers.append(key)
                strangers = strangers or (leaf not in own[layer] and leaf not in specific)
        held = _specific_keys(norm, layers)
        if from_caffe2 or strangers or (held and not any(key in state for key in held)):
            other[norm] = at_layers
            for key in at_layers:
                del state[key]
    return other


class _NormsKeepTheirOwnState(Checkpointer):
    """Drops another norm's tensors at layers of norms with parameters of their own (FRN)
    before fvcore loads the state.

    It sits below ``DetectionCheckpointer`` in ``SafeCheckpointer``'s method order, so it
    sees the state after detectron2 has renamed model-zoo ``.pkl`` blobs to the model's
    names (``__author__`` then still says whether they were Caffe2's).
    """

    def _load_model(self, checkpoint: Any) -> _IncompatibleKeys:
        from_caffe2 = checkpoint.get("__author__", None) == "Caffe2"
        self._other_norms = _drop_other_norms_state(self.model, checkpoint["model"], from_caffe2)
        return super()._load_model(checkpoint)


class SafeCheckpointer(DetectionCheckpointer, _NormsKeepTheirOwnState):
    """``DetectionCheckpointer`` safe to kill while it saves and safe to load from: atomic
    writes, weights-only reads and clear errors.

    Use it as detectron2's (``Trainer`` builds one as ``self.checkpointer``; detectron2's
    ``PeriodicCheckpointer`` hook saves through it). What differs:

    - ``save`` writes the checkpoint and then ``last_checkpoint`` atomically
      (``atomic_write``), and raises ``NonFiniteCheckpointError`` instead of writing a model
      that holds NaN or Inf. Saving into a non-local folder (a URL) is detectron2's.
    - ``.pth`` files load with ``torch.load(weights_only=True)`` plus ``SAFE_GLOBALS``;
      ``.pkl`` files (detectron2/Caffe2 model zoo: pickled dicts of numpy arrays, read with
      ``pickle`` as latin1) load through detectron2, since that format is a plain pickle.
      A file that cannot be read raises ``CorruptCheckpointError`` (missing, empty,
      truncated, foreign) or ``CheckpointError`` (objects weights-only loading refuses).
    - Tensors whose shape differs from the model's:

      * ``resume_or_load(path, resume=True)`` with a checkpoint in the folder (``--resume``)
        raises ``CheckpointShapeError`` listing each key with both shapes: resuming
        continues the same run, so any difference means another config. The model is
        then partly loaded and must not be used.
      * any other load (MODEL.WEIGHTS initialisation, ``load``) keeps detectron2's
        behaviour of skipping them, which fine-tuning a released model on another number
        of classes needs, and logs one warning that lists them all.
    - Layers of a norm with parameters of its own (FRN) never take another norm's
      tensors, whose scale and bias share FRN's parameter names: loading a BN-trained
      checkpoint (the ImageNet R-50 of the FRN configs) into an FRN model takes its convs
      and leaves the FRN layers fresh (see ``_drop_other_norms_state``). One log line per
      such norm says so, and names the norm's own parameters (tau, learned eps;
      ``norm_specific_keys``) as what the checkpoint lacks, instead of listing them among
      missing tensors.
    - ``resume_or_load(resume=True)``, when the checkpoint ``last_checkpoint`` names is
      corrupt or missing, warns and resumes from the newest older ``<prefix>_NNNNNNN.pth``
      that loads; and it first removes temporary files left by killed writers on this host.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool | None = None,
        divergence_advice: str = DIVERGENCE_ADVICE,
        **checkpointables: Any,
    ) -> None:
        """Arguments as ``DetectionCheckpointer``: ``save_to_disk`` defaults to "this is the
        main process"; ``checkpointables`` are objects with ``state_dict`` to save too.
        ``divergence_advice`` ends the ``NonFiniteCheckpointError`` of a diverged model: what
        to change, in the keys of the caller's config (SOLVER.BASE_LR for a yacs config,
        optimizer.lr for a lazy one)."""
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.divergence_advice = divergence_advice
        self._resuming = False
        self._strict = False
        self._loading: str | None = None
        # norm -> the tensors of another norm not loaded into its layers (last load)
        self._other_norms: dict[str, list[str]] = {}

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` (model, checkpointables, ``kwargs``) atomically,
        then point ``last_checkpoint`` at it. Does nothing without a save_dir or on a
        process that does not save.

        Raises:
            NonFiniteCheckpointError: the model holds NaN or Inf; nothing is written.
            ValueError: ``name`` contains a path separator.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        if not _is_local(self.save_dir):
            super().save(name, **kwargs)
            return
        basename = f"{name}.pth"
        if os.path.basename(basename) != basename:
            raise ValueError(f"checkpoint name must be a file name, got {name!r}")
        save_file = os.path.join(self.save_dir, basename)
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        self._check_finite(data["model"], save_file)

        self.logger.info("Saving checkpoint to %s", save_file)
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Point ``last_checkpoint`` at ``last_filename_basename``, atomically."""
        if not _is_local(self.save_dir):
            super().tag_last_checkpoint(last_filename_basename)
            return
        path = os.path.join(self.save_dir, LAST_CHECKPOINT)
        atomic_write_bytes(path, last_filename_basename.encode())

    def _check_finite(self, state: Mapping[str, Any], save_file: str) -> None:
        bad = [
            key
            for key, value in state.items()
            if torch.is_tensor(value)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ]
        if not bad:
            return
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        previous = self.get_checkpoint_file() if self.has_checkpoint() else ""
        kept = f"the last good checkpoint {previous} is kept" if previous else "none was saved"
        raise NonFiniteCheckpointError(
            f"refusing to save checkpoint {save_file}: {len(bad)} model tensors hold NaN or "
            f"Inf ({listed}), so training diverged; {kept}. {self.divergence_advice}"
        )

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """``DetectionCheckpointer.load``; a missing local file raises
        ``CorruptCheckpointError`` and unreadable ones the errors described in the class."""
        if path and _is_local(path):
            local = urlparse(path)._replace(query="").geturl()
            if os.path.isdir(local):
                raise CorruptCheckpointError(
                    f"checkpoint {local} is a folder, not a checkpoint file (such as "
                    f"{os.path.join(local, 'model_final.pth')}); to continue the run in that "
                    "folder, give it as OUTPUT_DIR with --resume"
                )
            if not os.path.isfile(local):
                raise CorruptCheckpointError(f"checkpoint {local} does not exist")
        self._loading = path
        try:
            return super().load(path, checkpointables)
        finally:
            self._loading = None
            # DetectionCheckpointer.load resets this only when loading succeeds; the next
            # load (a fallback to an older checkpoint) asserts that it is reset.
            self._parsed_url_during_load = None

    def resume_or_load(
        self, path: str, *, resume: bool = True, strict: bool = False
    ) -> dict[str, Any]:
        """With ``resume`` and a ``last_checkpoint`` in save_dir, load that checkpoint with
        all checkpointables, strictly (see the class); otherwise load only the model from
        ``path`` (empty: nothing), strictly if ``strict`` (``--eval-only``: every tensor
        of the model must be in the checkpoint, with its shape). Returns the checkpoint's
        remaining entries.

        Raises:
            CorruptCheckpointError: ``path`` cannot be read; or, resuming, neither the
                checkpoint ``last_checkpoint`` names nor an older one beside it can.
            CheckpointShapeError, CheckpointKeysError: see the class.
        """
        if self.save_to_disk and self.save_dir and _is_local(self.save_dir):
            self.remove_stale_temporary_files()
        if not (resume and self.has_checkpoint()):
            self._strict = strict
            try:
                return self.load(path, checkpointables=[])
            finally:
                self._strict = False
        if not _is_local(self.save_dir):
            self._resuming = True
            try:
                return self.load(self.get_checkpoint_file())
            finally:
                self._resuming = False
        return self._resume_from_folder()

    def _resume_from_folder(self) -> dict[str, Any]:
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT)
        name, problem = self._read_last_checkpoint()
        named = os.path.join(self.save_dir, name) if name else None
        older = self._older_checkpoints(named or "")
        self._resuming = True
        try:
            if named is not None:
                try:
                    return self.load(named)
                except CorruptCheckpointError as error:
                    problem = f"{tag} names {name}, which cannot be loaded: {error}"
            beside = ", ".join(os.path.basename(p) for p in older) or "none"
            logger.warning(
                "Cannot resume from it: %s. Complete checkpoints beside it, newest first: %s.",
                problem,
                beside,
            )
            failed = []
            for candidate in older:
                try:
                    extra = self.load(candidate)
                except CorruptCheckpointError as error:
                    failed.append(f"{os.path.basename(candidate)} ({error})")
                    continue
                logger.warning("Resumed from %s instead.", candidate)
                return extra
        finally:
            self._resuming = False
        if failed:
            tried = f"; none of the older checkpoints loads either: {'; '.join(failed)}"
        else:
            tried = f"; no older checkpoint (<prefix>_NNNNNNN.pth) is in {self.save_dir}"
        raise CorruptCheckpointError(
            f"cannot resume: {problem}{tried}. Remove {tag} to start from MODEL.WEIGHTS "
            "instead, or write into it the file name of a checkpoint to resume from"
        )

    def _read_last_checkpoint(self) -> tuple[str, str]:
        """The file name ``last_checkpoint`` holds and "", or "" and what is wrong with it."""
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT)
        try:
            with open(tag, "rb") as f:
                data = f.read(4096)
        except OSError as error:
            return "", f"{tag} cannot be read ({error})"
        try:
            name = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            name = None
        if name == "":
            return "", (
                f"{tag} is empty; it should hold the file name of the newest checkpoint, "
                "e.g. model_0000999.pth"
            )
        if name is None or os.path.basename(name) != name or not name.isprintable():
            return "", (
                f"{tag} does not hold a file name (it starts with {data[:32]!r}); it should "
                "hold the file name of the newest checkpoint, e.g. model_0000999.pth"
            )
        return name, ""

    def get_checkpoint_file(self) -> str:
        """The checkpoint ``last_checkpoint`` names, as a path ("" when it names none)."""
        if not _is_local(self.save_dir):
            return super().get_checkpoint_file()
        name, _ = self._read_last_checkpoint()
        return os.path.join(self.save_dir, name) if name else ""

    def _older_checkpoints(self, last: str) -> list[str]:
        # Numbered checkpoints of the same prefix before the one last_checkpoint names,
        # newest first; all of them if it names another kind of file (model_final.pth) or
        # none ("").
        match = _NUMBERED.match(os.path.basename(last))
        try:
            names = os.listdir(self.save_dir)
        except OSError:
            return []
        older = []
        for name in names:
            numbered = _NUMBERED.match(name)
            if not numbered:
                continue
            if match and (
                numbered["prefix"] != match["prefix"] or int(numbered["iter"]) >= int(match["iter"])
            ):
                continue
            older.append((int(numbered["iter"]), os.path.join(self.save_dir, name)))
        return [path for _, path in sorted(older, reverse=True)]

    def remove_stale_temporary_files(self) -> list[str]:
        """Remove the temporary files of ``atomic_write`` in save_dir that a process of this
        host left behind when it was killed (its pid no longer runs); returns their paths.
        Files of live processes and of other hosts are kept."""
        removed = []
        for path in stale_temporary_files(self.save_dir):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
                logger.info("Removed %s, left by a process killed while writing it.", path)
        return removed

    def _torch_load(self, f: str) -> dict[str, Any]:
        try:
            with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
                return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        except Exception as error:
            if "Unsupported global" in str(error):
                raise CheckpointError(_describe_refused(f, error)) from None
            raise CorruptCheckpointError(_describe_unreadable(f, error)) from None

    def _load_file(self, filename: str) -> dict[str, Any]:
        if not filename.endswith(".pkl"):
            return super()._load_file(filename)
        try:
            return super()._load_file(filename)
        except Exception as error:
            raise CorruptCheckpointError(_describe_unreadable(filename, error)) from None

    def _load_model(self, checkpoint: Any) -> _IncompatibleKeys:
        try:
            incompatible = super()._load_model(checkpoint)
        except ValueError as error:
            # fvcore's conversion of what the file holds into tensors.
            raise CorruptCheckpointError(
                f"checkpoint {self._loading} does not hold a state dict of tensors or numpy "
                f"arrays under 'model' ({error}); detectron2's model-zoo .pkl files are a "
                "dict with 'model' and '__author__', or Caffe2 blobs"
            ) from None
        if self._resuming and incompatible.incorrect_shapes:
            raise CheckpointShapeError(
                f"cannot resume from checkpoint {self._loading}: "
                f"{len(incompatible.incorrect_shapes)} tensors do not have the model's "
                f"shapes:\n{_format_shapes(incompatible.incorrect_shapes)}\n"
                "It was written by a run with another config; resume with the config.yaml "
                "of its output folder, or start a new run from it with MODEL.WEIGHTS "
                "(without --resume), which skips these tensors"
            )
        if not self._strict:
            return incompatible
        fix = (
            "evaluate it with the config it was trained with (config.yaml in the output "
            "folder of its run)"
        )
        if incompatible.incorrect_shapes:
            raise CheckpointShapeError(
                f"cannot evaluate checkpoint {self._loading} with this config: "
                f"{len(incompatible.incorrect_shapes)} tensors do not have the model's "
                f"shapes:\n{_format_shapes(incompatible.incorrect_shapes)}\n"
                f"Their values would be random, and so the AP; {fix}"
            )
        if incompatible.missing_keys:
            missing = incompatible.missing_keys
            listed = ", ".join(missing[:_MAX_LISTED])
            more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
            raise CheckpointKeysError(
                f"cannot evaluate checkpoint {self._loading} with this config: it lacks "
                f"{len(missing)} of the model's tensors ({listed}{more}), which would keep "
                f"their random initial values; {fix}"
            )
        return incompatible

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        # One warning with every mismatched tensor instead of detectron2's one per tensor:
        # a head trained for another number of classes is then read at a glance.
        if incompatible.incorrect_shapes:
            logger.warning(
                "Checkpoint %s: %d tensors do not have the model's shapes and were not "
                "loaded (expected when fine-tuning on another number of classes):\n%s",
                self._loading,
                len(incompatible.incorrect_shapes),
                _format_shapes(incompatible.incorrect_shapes),
            )
        missing = self._report_other_norms(incompatible.missing_keys)
        super()._log_incompatible_keys(
            incompatible._replace(incorrect_shapes=[], missing_keys=missing)
        )

    def _report_other_norms(self, missing_keys: list[str]) -> list[str]:
        """Log one line per norm whose layers took nothing from another norm's checkpoint;
        returns the missing keys that line does not explain."""
        if not self._other_norms:
            return missing_keys
        specific = norm_specific_keys(self.model)
        explained: set[str] = set()
        layers = _layers_of_norms_with_own_parameters(self.model)
        for norm, dropped in self._other_norms.items():
            lacking = [key for key in missing_keys if specific.get(key) == norm]
            leaves = sorted({key.rpartition(".")[2] for key in lacking})
            explained.update(dropped, lacking)
            logger.info(
                "Checkpoint %s was trained with another norm than %s: the model's %d %s "
                "layers keep their initial values. Not loaded: its %d tensors at those "
                "layers%s. Not in it, as expected: %d parameters specific to %s%s.",
                self._loading,
                norm,
                len(layers.get(norm, {})),
                norm,
                len(dropped),
                f" (e.g. {dropped[0]})" if dropped else "",
                len(lacking),
                norm,
                f" ({', '.join(leaves)})" if leaves else "",
            )
        return [key for key in missing_keys if key not in explained]
