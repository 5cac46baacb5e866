"""A config as frn-det runs it: detectron2's defaults, frn-det's keys, a YAML file and
``KEY VALUE`` options, merged with an error that names the mistake instead of yacs' bare
``KeyError`` / ``AssertionError`` / ``ValueError``.

- ``load_config``: defaults + frn-det's keys + the file (``_BASE_`` inheritance) + the
  options, refusing a missing file, invalid YAML, unknown keys (with the closest valid
  key), values of the wrong type and options that do not come in pairs; an integer where a
  float is expected is taken as that float (SOLVER.BASE_LR 1).
- ``explain_config_error``: the same explanations for what a user's own
  ``cfg.merge_from_file`` / ``merge_from_list`` raised (e.g. without ``add_frn_config``).
- ``check_config_options``: ``KEY VALUE`` options in pairs with a dotted key first, for
  every command line and record that holds them (train_net, the sweep, the model zoo's
  catalog and evaluation, the benchmark and batch-leak tools).
"""

from __future__ import annotations

import ast
import functools
import numbers
import os
import re
from collections.abc import Callable, Iterator, Sequence

import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.config.compat import guess_version

from frn_det.config import add_frn_config

from .errors import InputError, closest

__all__ = [
    "ADD_FRN_CONFIG_HINT",
    "check_config_options",
    "config_options_problem",
    "config_paths",
    "explain_config_error",
    "frn_config_keys",
    "load_config",
]

ADD_FRN_CONFIG_HINT = (
    "call frn_det.add_frn_config(cfg) on detectron2's get_cfg() before merge_from_file "
    "(frn_det.engine.validation.load_config does both)"
)
"""How to give a config frn-det's keys, for the messages that find them missing."""


# A yacs key: names of letters, digits and underscores joined by dots (SOLVER.BASE_LR).
# Case is left to the unknown-key check, whose "did you mean" handles "solver.base_lr".
_OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_NON_EXISTENT_KEY = re.compile(r"^Non-existent (?:config )?key: (?P<key>\S+)$")
_ODD_OPTIONS = re.compile(
    r"^Override list has odd length: (?P<options>.*); it must be a list of pairs$", re.DOTALL
)
_TYPE_MISMATCH = re.compile(
    r"^Type mismatch \(<class '(?P<want>\w+)'> vs\. <class '(?P<got>\w+)'>\) with values "
    r"\((?P<default>.*) vs\. (?P<value>.*)\) for config key: (?P<key>\S+)$",
    re.DOTALL,
)


def config_paths(node: CfgNode, prefix: str = "") -> Iterator[tuple[str, object]]:
    """``(key, value)`` for every key of ``node``, nodes ("MODEL.FRN") as well as leaves."""
    # Nodes too: an unknown key may be a misspelled section ("MODEL.RESNET").
    for key, value in node.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, CfgNode):
            yield from config_paths(value, f"{path}.")


def _config_keys(cfg: CfgNode) -> list[str]:
    return [path for path, _ in config_paths(cfg)]


@functools.cache
def frn_config_keys() -> frozenset[str]:
    """The keys ``add_frn_config`` adds to detectron2's defaults, nodes included (MODEL.FRN)."""
    return frozenset(_config_keys(add_frn_config(get_cfg()))) - frozenset(_config_keys(get_cfg()))


_PAIRS = "config options must be KEY VALUE pairs (a key, then its value)"


def _odd_options(shown: str) -> str:
    return f"{_PAIRS}, got an odd number of them: {shown}"


def config_options_problem(opts: Sequence[object]) -> str | None:
    """What is wrong with ``opts`` as ``KEY VALUE`` config options (detectron2's trailing
    ``merge_from_list`` arguments), or None: they must come in pairs, each key a dotted
    name such as SOLVER.BASE_LR (not a flag, a number or a path, which a missing or extra
    value shifts into a key's place). Whether a key exists is for the merge to say."""
    opts = list(opts)
    if len(opts) % 2:
        return _odd_options(repr(opts))
    for index in range(0, len(opts), 2):
        key = opts[index]
        if isinstance(key, str) and _OPTION_KEY.match(key):
            continue
        flag = isinstance(key, str) and key.startswith("-")
        hint = "; flags go before the KEY VALUE options" if flag else ""
        return (
            f"{_PAIRS}, got {key!r} where a key should be (option {index + 1} of {len(opts)}: "
            f"{opts}); keys are dotted names such as SOLVER.BASE_LR{hint}"
        )
    return None


def check_config_options(
    opts: Sequence[object], error: Callable[[str], Exception] = InputError
) -> None:
    """Raise ``error(message)`` (``InputError`` unless a caller has its own kind) when
    ``opts`` are not ``KEY VALUE`` config options; see ``config_options_problem``."""
    problem = config_options_problem(opts)
    if problem is not None:
        raise error(problem)


def explain_config_error(
    error: BaseException, cfg: CfgNode | None = None, source: str = "the config"
) -> InputError | None:
    """An ``InputError`` explaining what detectron2/yacs raised while merging into ``cfg``,
    or None when ``error`` is not one of those.

    Recognised: an unknown key (``KeyError: Non-existent config key`` from a file,
    ``AssertionError: Non-existent key`` from KEY VALUE options), a key of frn-det's config
    used without ``add_frn_config``, a value of the wrong type, KEY VALUE options that do
    not come in pairs, and renamed keys.

    Args:
        error: what ``merge_from_file`` / ``merge_from_list`` raised.
        cfg: the config merged into; its keys are the candidates for "did you mean"
            (detectron2's defaults plus frn-det's when None).
        source: where the input came from, for the message ("config file X").
    """
    text = str(error.args[0]) if error.args else ""
    if isinstance(error, KeyError | AssertionError):
        match = _NON_EXISTENT_KEY.match(text)
        if match:
            key = match["key"]
            if key in frn_config_keys():
                return InputError(
                    f"{key} (in {source}) is one of frn-det's config keys, which this config "
                    f"lacks: {ADD_FRN_CONFIG_HINT}"
                )
            known = _config_keys(cfg if cfg is not None else add_frn_config(get_cfg()))
            suggestion = closest(key, known)
            hint = (
                f"; did you mean {suggestion}?"
                if suggestion
                else " in detectron2's or frn-det's config (detectron2/config/defaults.py, "
                "frn_det/config.py)"
            )
            return InputError(f"config key {key} (in {source}) does not exist{hint}")
        match = _ODD_OPTIONS.match(text)
        if match:
            return InputError(_odd_options(match["options"]))
        if isinstance(error, KeyError) and "was renamed to" in text:
            return InputError(f"{text} (in {source})")
    if isinstance(error, ValueError):
        match = _TYPE_MISMATCH.match(text)
        if match:
            return InputError(
                f"config key {match['key']} (in {source}) takes a value of type "
                f"{match['want']} (its default is {match['default']}), got {match['got']} "
                f"{match['value']}"
            )
    return None


def load_config(
    config_file: str | os.PathLike | None, opts: Sequence[str] = (), cfg: CfgNode | None = None
) -> CfgNode:
    """detectron2's defaults (or ``cfg``) with frn-det's keys, merged with ``config_file``
    (``_BASE_`` inheritance) and the ``KEY VALUE`` list ``opts``. ``cfg`` is modified.

    Raises:
        InputError: the file (or a ``_BASE_`` it names) does not exist or is not YAML; a
            key does not exist (with the closest valid key); a value has the wrong type;
            ``opts`` are not KEY VALUE pairs (``check_config_options``).
    """
    cfg = add_frn_config(cfg if cfg is not None else get_cfg())
    if config_file:
        path = os.fspath(config_file)
        if not os.path.exists(path):
            raise InputError(f"config file {path} (--config-file) does not exist")
        if not os.path.isfile(path):
            raise InputError(f"config file {path} (--config-file) is not a file")
        _merge(cfg, lambda: _merge_file(cfg, path), f"config file {path}")
    check_config_options(opts)
    options = _floats_for_float_options(cfg, list(opts))
    _merge(cfg, lambda: cfg.merge_from_list(options), "the KEY VALUE options")
    return cfg


def _as_float(value: object) -> float | None:
    """``value`` as the float it means where a float key is given an int (1000) or, from
    YAML, a str in exponent notation without a dot ("1e-3", which YAML 1.1 reads as a
    str); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _floats_for_float_leaves(loaded: CfgNode, defaults: CfgNode) -> None:
    # In place, recursively: yacs refuses an int for a float key (SOLVER.BASE_LR: 1).
    for key, value in loaded.items():
        default = defaults.get(key) if isinstance(defaults, CfgNode) else None
        if isinstance(value, CfgNode):
            _floats_for_float_leaves(value, default)
        elif isinstance(default, float) and not isinstance(value, float):
            number = _as_float(value)
            if number is not None:
                loaded[key] = number


def _merge_file(cfg: CfgNode, path: str) -> None:
    """``cfg.merge_from_file(path)``, taking ints (and "1e-3") as floats for float keys."""
    loaded = type(cfg)(cfg.load_yaml_with_base(path, allow_unsafe=True))
    version = loaded.get("VERSION", None)
    if (version if version is not None else guess_version(loaded, path)) != cfg.VERSION:
        # detectron2 upgrades a config of an older version while merging it.
        cfg.merge_from_file(path)
        return
    _floats_for_float_leaves(loaded, cfg)
    cfg.merge_from_other_cfg(loaded)


def _floats_for_float_options(cfg: CfgNode, opts: list[object]) -> list[object]:
    """``opts`` (KEY VALUE ...) with an integer value of a float key written as a float."""
    options = list(opts)
    for index in range(0, len(options) - 1, 2):
        key, value = options[index], options[index + 1]
        node: object = cfg
        for part in str(key).split("."):
            node = node.get(part) if isinstance(node, CfgNode) else None
        if not isinstance(node, float):
            continue
        try:
            parsed = ast.literal_eval(value) if isinstance(value, str) else value
        except (ValueError, SyntaxError):
            continue
        number = None if isinstance(parsed, float) else _as_float(parsed)
        if number is not None:
            options[index + 1] = repr(number)
    return options


def _merge(cfg: CfgNode, merge: Callable[[], None], source: str) -> None:
    try:
        merge()
    except FileNotFoundError as error:
        # Only a _BASE_ can be missing here: the file itself was checked first.
        raise InputError(
            f"config file {error.filename}, named as _BASE_ by {source} or a file it "
            "inherits from, does not exist (_BASE_ paths are relative to the file naming them)"
        ) from error
    except yaml.YAMLError as error:
        raise InputError(f"{source} is not valid YAML: {' '.join(str(error).split())}") from error
    except (KeyError, AssertionError, ValueError) as error:
        explained = explain_config_error(error, cfg, source)
        if explained is None:
            raise
        raise explained from error
