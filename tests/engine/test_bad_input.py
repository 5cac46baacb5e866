"""Bad input, tried deliberately: each mistake is refused while the config is built, with a
message naming the key or file, the value received and what is accepted."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from frn_det.config import add_frn_config
from frn_det.engine import argument_parser, build_config, validation
from frn_det.engine.cli import check_args
from frn_det.engine.exits import exit_on_bad_input
from frn_det.engine.validation import (
    InputError,
    check_config,
    check_datasets,
    explain_config_error,
    load_config,
)
from frn_det.layers import registered_norms
from frn_det.modeling._slots import norm_options

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "train_net.py"
SHAPES_CONFIG = REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_frn.yaml"


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same world size and device on every machine: --num-gpus N means N gloo processes.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _args(*argv: str):
    return argument_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    "key",
    [
        "MODEL.RESNETS.NORM",
        "MODEL.FPN.NORM",
        "MODEL.ROI_BOX_HEAD.NORM",
        "MODEL.ROI_MASK_HEAD.NORM",
        "MODEL.RETINANET.NORM",
        "MODEL.RPN.NORM",
        "MODEL.SEM_SEG_HEAD.NORM",
    ],
)
def test_an_unknown_norm_names_the_key_the_value_the_registered_norms_and_the_closest(key):
    with pytest.raises(InputError) as raised:
        build_config(_args(key, "frm"))
    message = str(raised.value)
    assert message.startswith(f"{key} is 'frm', which is not a registered norm")
    assert "did you mean 'FRN'?" in message
    assert all(repr(name) in message for name in registered_norms())


def test_a_norm_with_no_close_name_lists_the_registered_norms_without_a_guess():
    with pytest.raises(InputError, match=r"'batchnorm', which is not a registered norm\. Reg"):
        build_config(_args("MODEL.FPN.NORM", "batchnorm"))


def test_frn_config_merged_without_add_frn_config_says_to_call_it_first():
    cfg = get_cfg()
    with pytest.raises(KeyError) as raised:
        cfg.merge_from_file(str(SHAPES_CONFIG))  # what a user's own script would do
    message = str(explain_config_error(raised.value, cfg))
    assert "SOLVER.REFERENCE_WORLD_BATCH" in message
    assert "call frn_det.add_frn_config(cfg)" in message and "before merge_from_file" in message


def test_a_config_asking_for_frn_without_frn_keys_says_to_call_add_frn_config():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.NORM = "FRN"
    with pytest.raises(InputError) as raised:
        check_config(cfg, world_size=1)
    message = str(raised.value)
    assert "lacks frn-det's keys " in message and "MODEL.FRN.EPS," in message
    assert "MODEL.RESNETS.NORM is 'FRN'" in message
    assert "call frn_det.add_frn_config(cfg)" in message


def test_frn_components_given_a_config_without_model_frn_say_to_call_add_frn_config():
    with pytest.raises(KeyError, match=r"MODEL\.FRN is missing.*add_frn_config\(cfg\)"):
        norm_options(get_cfg())


def test_a_user_script_merging_an_frn_config_into_get_cfg_exits_with_the_explanation(capsys):
    with pytest.raises(SystemExit) as exited, exit_on_bad_input(prog="my_script.py"):
        get_cfg().merge_from_file(str(SHAPES_CONFIG))
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(
        "my_script.py: error: SOLVER.REFERENCE_WORLD_BATCH (in the config) is one of "
        "frn-det's config keys"
    )


def test_a_batch_the_processes_cannot_share_names_the_batch_the_world_size_and_the_fix():
    with pytest.raises(InputError) as raised:
        build_config(_args("--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "5"))
    message = str(raised.value)
    assert "SOLVER.IMS_PER_BATCH is 5, which 2 training processes" in message
    assert "(e.g. 4 or 6 can)" in message and "--ims-per-gpu N" in message


def test_a_batch_smaller_than_the_world_size_is_refused_before_the_data_loader():
    with pytest.raises(InputError, match=r"IMS_PER_BATCH is 2, fewer images than the 4 train"):
        build_config(_args("--num-gpus", "4", "SOLVER.IMS_PER_BATCH", "2"))


def test_ims_per_gpu_makes_any_world_size_share_the_batch():
    cfg = build_config(_args("--num-gpus", "3", "--ims-per-gpu", "1", "SOLVER.IMS_PER_BATCH", "5"))
    assert cfg.SOLVER.IMS_PER_BATCH == 3


def test_an_invalid_ims_per_gpu_in_the_config_is_input_error_naming_the_value():
    with pytest.raises(InputError, match=r"SOLVER\.IMS_PER_GPU must be 0 .* got int -1"):
        build_config(_args("SOLVER.IMS_PER_GPU", "-1"))


@pytest.fixture
def coco_dataset(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``coco_dataset(content, images=True)``: registers a COCO dataset whose json holds
    ``content`` (bytes, a JSON value, or None for no file) and returns its name."""
    names: list[str] = []

    def register(content: object, images: bool = True) -> str:
        name = f"frn_test_bad_coco_{len(names)}"
        json_file = tmp_path / f"{name}.json"
        image_root = tmp_path / f"{name}_images"
        if isinstance(content, bytes):
            json_file.write_bytes(content)
        elif content is not None:
            json_file.write_text(json.dumps(content))
        if images:
            image_root.mkdir()
            (image_root / "1.png").write_bytes(b"")
        register_coco_instances(name, {}, str(json_file), str(image_root))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _dataset_config(train: str):
    cfg = add_frn_config(get_cfg())
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = ()
    return cfg


GOOD_COCO = {"images": [{"id": 1, "file_name": "1.png"}], "annotations": [], "categories": []}


@pytest.mark.parametrize(
    ("content", "images", "problem"),
    [
        (None, True, "does not exist"),
        (b"", True, "is empty (0 bytes)"),
        (b'{"images": [', True, "is not valid JSON (Expecting value at line 1 column 13)"),
        ([1, 2], True, "holds a JSON list; a COCO file is an object with 'images', 'anno"),
        ({"images": [], "annotations": []}, True, "has no 'categories'; a COCO file is"),
        ({**GOOD_COCO, "images": []}, True, "lists no images"),
        (GOOD_COCO, False, "image folder"),
    ],
)
def test_a_broken_coco_dataset_names_the_dataset_the_path_the_problem_and_datasets_md(
    coco_dataset, content, images, problem
):
    name = coco_dataset(content, images=images)
    metadata = MetadataCatalog.get(name)
    path = metadata.image_root if problem == "image folder" else metadata.json_file
    with pytest.raises(InputError) as raised:
        check_datasets(_dataset_config(name))
    message = str(raised.value)
    assert message.startswith(f"dataset '{name}' (DATASETS.TRAIN): its ")
    assert f"{path} " in message and problem in message
    assert "DETECTRON2_DATASETS" in message and "see datasets.md" in message


def test_a_test_set_without_annotations_is_accepted_but_a_training_set_is_not(coco_dataset):
    name = coco_dataset({"images": GOOD_COCO["images"], "categories": []})
    cfg = _dataset_config(name)
    cfg.DATASETS.TEST = (name,)
    check_datasets(cfg, train=False)  # like COCO test-dev: predictions only
    with pytest.raises(InputError, match="has no 'annotations'"):
        check_datasets(cfg, train=True)


def test_an_unregistered_dataset_is_named_with_the_closest_registered_one():
    with pytest.raises(InputError) as raised:
        check_datasets(_dataset_config("coco_2017_trian"))
    message = str(raised.value)
    assert "dataset 'coco_2017_trian' (DATASETS.TRAIN) is not registered" in message
    assert "did you mean 'coco_2017_train'?" in message and "datasets.md" in message


def test_the_embedded_dataset_is_not_generated_or_refused_by_the_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing generated here yet, and nothing may be
    cfg = _dataset_config("frn_shapes_train")
    cfg.DATASETS.TEST = ("frn_shapes_val",)
    check_datasets(cfg)
    assert list(tmp_path.iterdir()) == []


def test_check_args_checks_the_datasets_of_the_run_before_any_process_starts(tmp_path):
    with pytest.raises(InputError, match=r"'coco_2017_val' \(DATASETS.TEST\): its annotation"):
        check_args(
            _args("DATASETS.TRAIN", "('frn_shapes_train',)", "DATASETS.TEST", "('coco_2017_val',)")
        )


def test_an_unknown_key_in_a_config_file_names_the_key_the_file_and_the_closest_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("MODEL:\n  RESNETS:\n    DEPHT: 18\n")
    with pytest.raises(InputError) as raised:
        load_config(path)
    assert str(raised.value) == (
        f"config key MODEL.RESNETS.DEPHT (in config file {path}) does not exist; "
        "did you mean MODEL.RESNETS.DEPTH?"
    )


def test_an_unknown_key_in_the_options_names_the_key_and_the_closest_key():
    with pytest.raises(InputError) as raised:
        build_config(_args("SOLVER.BASE_RL", "0.1"))
    assert str(raised.value) == (
        "config key SOLVER.BASE_RL (in the KEY VALUE options) does not exist; "
        "did you mean SOLVER.BASE_LR?"
    )


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["SOLVER.BASE_LR"], r"KEY VALUE pairs .*got an odd number of them: \['SOLVER.BASE_LR'\]$"),
        (
            ["SOLVER.BASE_LR", "0.1", "0.2", "SEED"],
            r"got '0.2' where a key should be \(option 3 of 4: .*such as SOLVER.BASE_LR$",
        ),
        (["SEED", "1", "--resume", "x"], r"got '--resume' .*flags go before the KEY VALUE"),
    ],
)
def test_options_that_are_not_key_value_pairs_are_refused_naming_the_one_out_of_place(
    opts, message
):
    with pytest.raises(InputError, match=message):
        build_config(_args(*opts))
    with pytest.raises(InputError, match=message):
        validation.check_config_options(opts)
    validation.check_config_options(["SOLVER.BASE_LR", "0.1", "solver.max_iter", "5"])


def test_a_users_own_merge_of_an_odd_option_list_is_explained():
    cfg = add_frn_config(get_cfg())
    with pytest.raises(AssertionError) as raised:
        cfg.merge_from_list(["SOLVER.BASE_LR"])
    assert str(explain_config_error(raised.value, cfg)) == (
        "config options must be KEY VALUE pairs (a key, then its value), got an odd number "
        "of them: ['SOLVER.BASE_LR']"
    )


def test_a_value_of_the_wrong_type_names_the_key_the_type_and_the_value():
    with pytest.raises(InputError, match=r"IMS_PER_BATCH .* type int \(its default is 16\), got"):
        build_config(_args("SOLVER.IMS_PER_BATCH", "two"))


def test_a_missing_config_file_is_named():
    with pytest.raises(InputError, match=r"^config file no/such\.yaml \(--config-file\) does"):
        build_config(_args("--config-file", "no/such.yaml"))


def test_a_missing_base_config_is_named_with_the_file_that_names_it(tmp_path):
    path = tmp_path / "child.yaml"
    path.write_text('_BASE_: "parent.yaml"\n')
    with pytest.raises(InputError) as raised:
        load_config(path)
    assert str(raised.value).startswith(
        f"config file {tmp_path / 'parent.yaml'}, named as _BASE_ by config file {path}"
    )


def test_train_net_with_a_misspelled_key_prints_one_line_and_exits_non_zero():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--config-file", str(SHAPES_CONFIG)]
        + ["SOLVER.BASE_RL", "0.1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "train_net.py: error: config key SOLVER.BASE_RL (in the KEY VALUE options) does not "
        "exist; did you mean SOLVER.BASE_LR?"
    )


def test_exit_on_bad_input_lets_good_runs_and_unrelated_errors_through():
    with exit_on_bad_input():
        pass
    with pytest.raises(KeyError, match="not about input"), exit_on_bad_input():
        raise KeyError("not about input")


def test_a_truncated_large_annotation_file_is_found_without_parsing_it(coco_dataset, monkeypatch):
    monkeypatch.setattr(validation.datasets, "PARSE_LIMIT_BYTES", 0)  # every file counts as large
    whole = json.dumps(GOOD_COCO).encode()
    check_datasets(_dataset_config(coco_dataset(whole)))
    with pytest.raises(InputError, match=r"does not end with '}': it looks truncated"):
        check_datasets(_dataset_config(coco_dataset(whole[:-10])))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("MODEL.FRN.EPS", "-1.0"), "MODEL.FRN.EPS must be a finite number > 0 (FRN's epsilon;"),
        (("MODEL.FRN.EPS", "0.0"), "MODEL.FRN.EPS must be a finite number > 0"),
        (("MODEL.FRN.EPS", "0"), "MODEL.FRN.EPS must be a finite number > 0"),
        (
            ("MODEL.FRN.IMPL", "fast"),
            "MODEL.FRN.IMPL is 'fast', which is not one of 'auto', 'compiled', 'autograd', "
            "'reference'",
        ),
        (
            ("MODEL.FRN.AFTER_FC", "FRN1d"),
            "MODEL.FRN.AFTER_FC is 'FRN1d', which is not one of 'TLU', 'FRN'",
        ),
        (
            ("SOLVER.AMP.PRECISION", "fp8"),
            "SOLVER.AMP.PRECISION is 'fp8', which is not one of 'auto', 'float16', 'bfloat16'",
        ),
        (
            ("SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "float16"),
            "SOLVER.AMP.PRECISION is 'float16' but the model runs on the CPU",
        ),
        (
            ("TEST.COCOEVAL_BACKEND", "pycoco"),
            "TEST.COCOEVAL_BACKEND is 'pycoco', which is not one of 'auto', 'faster', "
            "'pycocotools'; did you mean 'pycocotools'?",
        ),
        (("SOLVER.BASE_LR", "-0.1"), "SOLVER.BASE_LR must be a finite number >= 0"),
        (("SOLVER.MAX_ITER", "0"), "SOLVER.MAX_ITER is 0, so nothing would be trained"),
        (("SOLVER.MOMENTUM", "-0.9"), "SOLVER.MOMENTUM must be a finite number >= 0 (SGD's"),
        (("MODEL.DEVICE", "tpu"), "MODEL.DEVICE is 'tpu'; frn-det trains on 'cpu', 'cuda' or"),
        (
            ("SOLVER.CHECKPOINT_PERIOD", "0"),
            "SOLVER.CHECKPOINT_PERIOD must be an integer >= 1 (iterations between checkpoints)",
        ),
        (("SOLVER.WARMUP_ITERS", "-3"), "SOLVER.WARMUP_ITERS must be an integer >= 0"),
        (("TEST.EVAL_PERIOD", "-5"), "TEST.EVAL_PERIOD must be an integer >= 0"),
        (("DATALOADER.NUM_WORKERS", "-1"), "DATALOADER.NUM_WORKERS must be an integer >= 0"),
        (("MODEL.ROI_HEADS.NUM_CLASSES", "0"), "MODEL.ROI_HEADS.NUM_CLASSES must be an integer"),
        (("INPUT.MIN_SIZE_TRAIN", "(0,)"), "INPUT.MIN_SIZE_TRAIN must be image sizes in pixels"),
        (
            ("MODEL.BACKBONE.NAME", "build_resnet_fpm_backbone"),
            "MODEL.BACKBONE.NAME is 'build_resnet_fpm_backbone', which names no registered "
            "component; did you mean 'build_resnet_fpn_backbone'? Registered: ",
        ),
        (
            ("MODEL.META_ARCHITECTURE", "GeneralisedRCNN"),
            "MODEL.META_ARCHITECTURE is 'GeneralisedRCNN', which names no registered component;"
            " did you mean 'GeneralizedRCNN'?",
        ),
        (("MODEL.ROI_HEADS.NAME", "StandardROIHead"), "MODEL.ROI_HEADS.NAME is 'StandardROIHead'"),
        (("MODEL.RESNETS.DEPTH", "19"), "MODEL.RESNETS.DEPTH is 19, which is not one of 18, 34,"),
        (
            ("SOLVER.LR_SCHEDULER_NAME", "Cosine"),
            "SOLVER.LR_SCHEDULER_NAME is 'Cosine', which is not one of 'WarmupMultiStepLR', ",
        ),
        (("SOLVER.WEIGHT_DECAY", "-1e-4"), "SOLVER.WEIGHT_DECAY must be a finite number >= 0"),
        (
            ("SOLVER.NESTEROV", "True", "SOLVER.MOMENTUM", "0.0"),
            "SOLVER.NESTEROV is True but SOLVER.MOMENTUM is 0",
        ),
        (
            ("SOLVER.STEPS", "(500, 100)"),
            "SOLVER.STEPS must be strictly increasing iterations >= 1 (where the LR drops by "
            "SOLVER.GAMMA), got (500, 100)",
        ),
    ],
)
def test_a_value_out_of_its_range_or_set_is_refused_naming_key_value_and_accepted(
    options, expected
):
    with pytest.raises(InputError) as raised:
        build_config(_args(*options))
    message = str(raised.value)
    assert message.startswith(expected)
    assert repr(float(options[1])) in message if options[0] == "MODEL.FRN.EPS" else True


def test_a_schedule_of_no_iterations_is_fine_for_eval_only():
    build_config(_args("--eval-only", "SOLVER.MAX_ITER", "0"))


def test_a_test_size_of_zero_keeps_detectron2s_meaning_no_resizing():
    assert build_config(_args("INPUT.MIN_SIZE_TEST", "0")).INPUT.MIN_SIZE_TEST == 0


def test_every_shipped_config_passes_the_checks():
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        if path.parent.name != "configs":  # the Base-*.yaml files are not run on their own
            build_config(_args("--config-file", str(path)))


def test_an_integer_for_a_float_key_is_taken_as_that_float(tmp_path):
    cfg = build_config(_args("SOLVER.BASE_LR", "1000", "MODEL.FRN.EPS", "1"))
    assert cfg.SOLVER.BASE_LR == 1000.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.MODEL.FRN.EPS == 1.0 and isinstance(cfg.MODEL.FRN.EPS, float)
    # In a file too, and YAML's "1e-3" (a str in YAML 1.1) as the float it spells.
    path = tmp_path / "ints.yaml"
    path.write_text("SOLVER:\n  BASE_LR: 2\n  WEIGHT_DECAY: 1e-3\n  MAX_ITER: 7\n")
    cfg = load_config(path)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY) == (2.0, 0.001)
    assert cfg.SOLVER.MAX_ITER == 7 and isinstance(cfg.SOLVER.MAX_ITER, int)


def test_a_float_for_an_integer_key_is_still_refused():
    with pytest.raises(InputError, match=r"SOLVER.MAX_ITER .* type int .* got float 10.5"):
        build_config(_args("SOLVER.MAX_ITER", "10.5"))


def test_no_config_file_says_to_give_one_instead_of_an_assertion_on_empty_datasets():
    with pytest.raises(InputError) as raised:
        check_args(_args())
    assert str(raised.value).startswith(
        "no --config-file given, and detectron2's defaults name no dataset (DATASETS.TRAIN is "
        "()); give the config of an experiment, e.g. --config-file configs/Shapes/"
    )


def test_an_empty_training_dataset_list_is_refused_naming_the_key():
    with pytest.raises(InputError) as raised:
        check_args(_args("--config-file", str(SHAPES_CONFIG), "DATASETS.TRAIN", "()"))
    assert str(raised.value).startswith(
        "DATASETS.TRAIN is (), so there is nothing to train on; name registered datasets"
    )


def test_images_a_coco_file_lists_but_the_image_folder_lacks_are_named_up_front(coco_dataset):
    images = [{"id": i, "file_name": f"{i}.png"} for i in (1, 2, 3)]
    name = coco_dataset({**GOOD_COCO, "images": images})  # the folder holds only 1.png
    metadata = MetadataCatalog.get(name)
    with pytest.raises(InputError) as raised:
        check_datasets(_dataset_config(name))
    assert str(raised.value).startswith(
        f"dataset '{name}' (DATASETS.TRAIN): 2 of the 3 images its annotation file "
        f"{metadata.json_file} lists are not in its image folder {metadata.image_root} "
        "(2.png, 3.png)"
    )


def test_schedule_values_typed_on_the_command_line_are_not_rescaled_and_the_log_says_so():
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("frn_det.engine.batch")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        cfg = build_config(
            _args(
                "--config-file", str(SHAPES_CONFIG), "--ims-per-gpu", "2", "SOLVER.MAX_ITER", "10"
            )
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    # The Shapes schedule is written for 4 images: 2 images halve the LR, double the steps.
    assert cfg.SOLVER.MAX_ITER == 10
    assert cfg.SOLVER.STEPS == (960, 1120) and pytest.approx(0.02) == cfg.SOLVER.BASE_LR
    [message] = [m for m in messages if "Rescaled" in m]
    assert "SOLVER.BASE_LR 0.04 -> 0.02; " in message and "SOLVER.STEPS (480, 560) -> " in message
    assert "SOLVER.MAX_ITER" not in message.split("Kept")[0]
    assert message.endswith("Kept as given on the command line: SOLVER.MAX_ITER=10.")


def test_a_typed_schedule_with_its_reference_batch_is_rescaled_as_a_whole():
    # How a sweep passes a shortened reference schedule (written for 4 images).
    options = ["SOLVER.MAX_ITER", "400", "SOLVER.REFERENCE_WORLD_BATCH", "4"]
    cfg = build_config(_args("--config-file", str(SHAPES_CONFIG), "--ims-per-gpu", "2", *options))
    assert cfg.SOLVER.MAX_ITER == 800
