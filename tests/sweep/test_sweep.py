"""tools/sweep.py: the grid, its folders, the dry-run's schedule, skipping and resuming."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from frn_det_tools.summarize import summarize
from frn_det_tools.sweep import (
    SweepError,
    config_stem,
    expand_grid,
    grid_warnings,
    main,
    read_metrics,
    read_state,
    run_sweep,
    subprocess_runner,
)

REPO = Path(__file__).resolve().parents[2]
SHAPES_TEMPLATE = os.fspath(REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_{norm}.yaml")
STEM = "mask_rcnn_R_18_FPN"


def _grid(output, **kwargs):
    kwargs.setdefault("norms", ["bn", "frn"])
    kwargs.setdefault("ims_per_gpu", [1, 2])
    return expand_grid(
        [SHAPES_TEMPLATE], kwargs.pop("norms"), kwargs.pop("ims_per_gpu"), output, **kwargs
    )


def test_the_grid_is_norms_by_images_per_gpu_by_repeats_each_in_its_own_folder(tmp_path):
    runs = _grid(tmp_path, repeats=2, seed=5)
    assert len(runs) == 2 * 2 * 2
    folders = [r.output_dir for r in runs]
    assert len(set(folders)) == len(folders)
    frn = [r for r in runs if r.norm == "frn" and r.ims_per_gpu == 2 and r.seed == 6]
    assert [r.output_dir for r in frn] == [tmp_path / STEM / "frn" / "ipg2" / "seed6"]
    assert frn[0].config == REPO / "configs" / "Shapes" / "mask_rcnn_R_18_FPN_frn.yaml"


def test_repeats_get_distinct_seeds_and_every_point_the_same_ones(tmp_path):
    runs = _grid(tmp_path, repeats=3, seed=5)
    seeds = {}
    for run in runs:
        seeds.setdefault((run.norm, run.ims_per_gpu), []).append(run.seed)
        args = run.train_net_args()
        assert args[args.index("SEED") + 1] == str(run.seed)
    assert set(map(tuple, seeds.values())) == {(5, 6, 7)}


@pytest.mark.parametrize(
    ("template", "stem"),
    [
        ("configs/Shapes/mask_rcnn_R_18_FPN_{norm}.yaml", "mask_rcnn_R_18_FPN"),
        ("configs/COCO-Detection/faster_rcnn_R_50_FPN_3x_{norm}.yaml", "faster_rcnn_R_50_FPN_3x"),
        ("x/{norm}_retinanet.yml", "retinanet"),
    ],
)
def test_the_config_stem_is_the_file_name_without_the_norm(template, stem):
    assert config_stem(template) == stem


def test_syncbn_can_run_with_more_processes_than_the_other_norms(tmp_path):
    runs = _grid(tmp_path, norms=["bn", "syncbn"], ims_per_gpu=[4], norm_num_gpus={"syncbn": 2})
    by_norm = {r.norm: r.train_net_args() for r in runs}
    assert by_norm["syncbn"][by_norm["syncbn"].index("--num-gpus") + 1] == "2"
    assert "--dist-url" in by_norm["syncbn"]  # a free port, not the per-user default
    assert by_norm["bn"][by_norm["bn"].index("--num-gpus") + 1] == "1"
    [warning] = grid_warnings(runs)
    assert "total batch" in warning
    lone = grid_warnings(_grid(tmp_path, norms=["syncbn"], ims_per_gpu=[4]))
    assert any("syncbn runs with 1 process" in w for w in lone)


@pytest.mark.parametrize(
    ("templates", "kwargs", "message"),
    [
        (["configs/Shapes/mask_rcnn_R_18_FPN_frn.yaml"], {}, r"no \{norm\} placeholder"),
        (
            [SHAPES_TEMPLATE],
            {"norms": ["bn", "xn"]},
            r"mask_rcnn_R_18_FPN_xn.yaml.*'xn'.*not exist",
        ),
        ([SHAPES_TEMPLATE], {"opts": ["SEED", "3"]}, r"SEED is set by the sweep"),
        ([SHAPES_TEMPLATE], {"opts": ["MODEL.FRN.IMPL"]}, r"KEY VALUE pairs.*odd"),
        ([SHAPES_TEMPLATE], {"norm_num_gpus": {"sync": 2}}, r"\['sync'\].*norms: \['bn'\]"),
        ([SHAPES_TEMPLATE], {"ims_per_gpu": [0]}, r"integer >= 1, got 0"),
        ([SHAPES_TEMPLATE, "other/mask_rcnn_R_18_FPN_{norm}.yaml"], {}, r"share the run folders"),
    ],
)
def test_a_grid_that_cannot_run_is_refused_naming_the_value(tmp_path, templates, kwargs, message):
    kwargs = {"norms": ["bn"], "ims_per_gpu": [1], **kwargs}
    with pytest.raises(SweepError, match=message):
        expand_grid(templates, kwargs.pop("norms"), kwargs.pop("ims_per_gpu"), tmp_path, **kwargs)


def _dry_run(tmp_path, capsys, *extra):
    argv = ["--configs", SHAPES_TEMPLATE, "--norms", "bn,syncbn,frn", "--norm-gpus", "syncbn=2"]
    argv += ["--ims-per-gpu", "1,8", "--output", str(tmp_path / "out"), "--dry-run", *extra]
    assert main(argv) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        cells = line.split()
        if cells and cells[0].startswith(STEM + "/"):
            rows[cells[0].removeprefix(STEM + "/")] = cells[1:]
    return rows


def test_the_dry_run_shows_lr_iterations_and_batch_scaled_from_the_reference_batch(
    tmp_path, capsys
):
    # The Shapes schedule is written for 4 images: BASE_LR 0.04, MAX_ITER 600.
    rows = _dry_run(tmp_path, capsys, "MODEL.FRN.IMPL", "autograd")
    # procs, IMS_PER_BATCH, BASE_LR, MAX_ITER, images, est. left, action
    assert rows["bn/ipg1/seed0"][:5] == ["1", "1", "0.01", "2400", "2400"]
    assert rows["bn/ipg8/seed0"][:5] == ["1", "8", "0.08", "300", "2400"]
    assert rows["syncbn/ipg1/seed0"][:5] == ["2", "2", "0.02", "1200", "2400"]
    assert rows["syncbn/ipg8/seed0"][:5] == ["2", "16", "0.16", "150", "2400"]
    assert rows["frn/ipg1/seed0"][5:] == ["?", "start"]
    assert not (tmp_path / "out").exists(), "a dry run must not create run folders"


def test_the_dry_run_estimates_time_from_finished_runs_and_shows_what_it_would_do(
    tmp_path, capsys, fake_run
):
    out = tmp_path / "out"
    done = fake_run(out, "bn", 8, 0, "done", box=30.0, max_iter=200)
    record = json.loads((done / "DONE.json").read_text())
    # 200 iterations x 8 images in 160 s: 0.1 s an image.
    record.update(seconds=160.0, images_trained=1600)
    (done / "DONE.json").write_text(json.dumps(record))
    fake_run(out, "frn", 1, 0, "failed", iteration=37, max_iter=1600, returncode=3)
    rows = _dry_run(tmp_path, capsys)
    assert rows["bn/ipg8/seed0"][5:] == ["-", "skip", "(done)"]
    # 2,400 images (600 iterations of 4 at the reference) at 0.1 s an image.
    assert rows["bn/ipg1/seed0"][5:] == ["4m00s", "start"]
    # No finished frn run: the estimate falls back on the config's other norms.
    assert rows["frn/ipg1/seed0"][5:] == ["4m00s", "restart", "(after", "exit", "3)"]


def test_finished_runs_are_skipped_and_interrupted_ones_resume_from_their_checkpoint(
    tmp_path, fake_runner
):
    runs = _grid(tmp_path, norms=["frn"], ims_per_gpu=[1, 4])
    crashing = runs[1].output_dir
    first = fake_runner(crash_at={crashing: 120})
    outcome = run_sweep(runs, first, echo=lambda _: None)
    assert outcome == {
        "done": [runs[0].output_dir], "skipped": [], "diverged": [], "failed": [crashing]
    }
    assert all("--resume" not in c for c in first.commands)
    state = read_state(crashing)
    assert (state.status, state.iteration, state.checkpoint_iter) == ("failed", 120, 100)
    assert state.describe() == "failed (exit 1, iter 120/600)"
    assert json.loads((runs[0].output_dir / "DONE.json").read_text())["results"] == {
        "bbox/AP": 30.0
    }

    second = fake_runner()
    outcome = run_sweep(runs, second, echo=lambda _: None)
    assert outcome == {
        "done": [crashing], "skipped": [runs[0].output_dir], "diverged": [], "failed": []
    }
    [command] = second.commands
    assert "--resume" in command and command[command.index("OUTPUT_DIR") + 1] == str(crashing)
    assert not (crashing / "FAILED.json").exists()
    assert read_state(crashing).status == "done"
    # The torn line and the line that ran into it are skipped, not fatal.
    records, skipped = read_metrics(crashing / "metrics.json")
    assert skipped == 1 and records[-1]["bbox/AP"] == 30.0

    third = fake_runner()
    assert run_sweep(runs, third, echo=lambda _: None)["skipped"] == [r.output_dir for r in runs]
    assert third.commands == []


def test_a_diverged_run_is_kept_as_a_result_unless_retry_diverged(tmp_path, fake_runner):
    runs = _grid(tmp_path, norms=["gn"], ims_per_gpu=[1, 4])
    diverging = runs[1].output_dir
    first = fake_runner(diverge_at={diverging: 250})
    outcome = run_sweep(runs, first, echo=lambda _: None)
    assert outcome == {
        "done": [runs[0].output_dir], "skipped": [], "diverged": [diverging], "failed": []
    }
    failed = json.loads((diverging / "FAILED.json").read_text())
    assert failed["reason"] == "exit 1: diverged at iteration 250"
    state = read_state(diverging)
    assert (state.status, state.diverged_at) == ("failed", 250)
    assert state.describe().startswith("diverged at iter 250 ")

    lines = []
    again = fake_runner()
    outcome = run_sweep(runs, again, echo=lines.append)
    assert again.commands == [] and outcome["diverged"] == [diverging]
    assert any("diverged at iteration 250 before, kept" in line for line in lines)

    retry = fake_runner()
    outcome = run_sweep(runs, retry, echo=lambda _: None, retry_diverged=True)
    assert outcome["done"] == [diverging] and len(retry.commands) == 1
    assert read_state(diverging).status == "done" and not read_state(diverging).diverged


def test_a_crash_is_not_taken_for_divergence(tmp_path, fake_runner):
    [run] = _grid(tmp_path, norms=["gn"], ims_per_gpu=[4])
    run_sweep([run], fake_runner(crash_at={run.output_dir: 120}), echo=lambda _: None)
    assert read_state(run.output_dir).diverged_at is None
    again = fake_runner()
    run_sweep([run], again, echo=lambda _: None)
    assert len(again.commands) == 1  # a crash is trained again


def test_the_exit_status_tells_diverged_runs_from_failed_ones(
    tmp_path, fake_runner, monkeypatch, capsys
):
    argv = ["--configs", SHAPES_TEMPLATE, "--norms", "gn", "--ims-per-gpu", "1,4"]
    out = tmp_path / "out"
    [small, large] = [out / STEM / "gn" / f"ipg{n}" / "seed0" for n in (1, 4)]
    assert main([*argv, "--output", str(out)], runner=fake_runner(diverge_at={large: 40})) == 3
    assert "1 trained, 0 already done, 1 diverged, 0 failed" in capsys.readouterr().out
    # Kept: a second sweep trains nothing and says the same.
    assert main([*argv, "--output", str(out)], runner=fake_runner()) == 3
    # The dry run says what a sweep would do with it.
    assert main([*argv, "--output", str(out), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "keep (diverged at iter 40)" in dry and "1 diverged (kept)" in dry
    assert main([*argv, "--output", str(out), "--dry-run", "--retry-diverged"]) == 0
    assert "restart (after exit 1)" in capsys.readouterr().out
    other = tmp_path / "other"
    crash = {other / STEM / "gn" / "ipg1" / "seed0": 120}
    assert main([*argv, "--output", str(other)], runner=fake_runner(crash_at=crash)) == 1


def test_a_run_trained_to_the_end_without_done_json_is_only_recorded(tmp_path, fake_runner):
    [run] = _grid(tmp_path, norms=["gn"], ims_per_gpu=[4])
    run.output_dir.mkdir(parents=True)
    (run.output_dir / "model_final.pth").write_bytes(b"final")
    (run.output_dir / "metrics.json").write_text(
        '{"iteration": 599, "total_loss": 1.0}\n{"iteration": 600, "bbox/AP": 41.5}\n'
    )
    runner = fake_runner()
    assert run_sweep([run], runner, echo=lambda _: None)["done"] == [run.output_dir]
    assert runner.commands == []
    assert json.loads((run.output_dir / "DONE.json").read_text())["results"] == {"bbox/AP": 41.5}


def test_exiting_without_a_final_model_is_a_failure(tmp_path):
    [run] = _grid(tmp_path, norms=["gn"], ims_per_gpu=[4])
    outcome = run_sweep([run], lambda command, log: 0, echo=lambda _: None)
    assert outcome["failed"] == [run.output_dir]
    failed = json.loads((run.output_dir / "FAILED.json").read_text())
    assert failed["reason"] == "exit 0 without model_final.pth"


def test_a_folder_holding_a_run_with_other_arguments_is_refused(tmp_path, fake_runner):
    [run] = _grid(tmp_path, norms=["gn"], ims_per_gpu=[4])
    run_sweep([run], fake_runner(), echo=lambda _: None)
    [changed] = _grid(tmp_path, norms=["gn"], ims_per_gpu=[4], opts=["SOLVER.BASE_LR", "0.1"])
    with pytest.raises(
        SweepError, match=r"(?s)other train_net arguments.*gn/ipg4/seed0.*now.*BASE_LR"
    ):
        run_sweep([changed], fake_runner(), echo=lambda _: None)


def test_progress_lines_come_while_a_run_trains_with_the_eta_of_the_run_and_the_sweep(tmp_path):
    # ipg1: 2400 iterations of 1 image; ipg4: 600 of 4.
    runs = _grid(tmp_path, norms=["frn"], ims_per_gpu=[1, 4])
    lines = []

    def runner(command, log_path):
        out = Path(command[command.index("OUTPUT_DIR") + 1])
        max_iter = json.loads((out / "RUN.json").read_text())["schedule"]["max_iter"]
        with (out / "metrics.json").open("a") as f:
            for it in (19, 39):
                record = {"iteration": it, "total_loss": 2.0 - it / 100, "time": 0.5}
                record["eta_seconds"] = (max_iter - it - 1) * 0.5
                f.write(json.dumps(record) + "\n")
                f.flush()
                # The sweep must report this iteration before the run goes on.
                deadline = time.monotonic() + 10
                expected = f"{out.parent.name}/{out.name}: iter {it + 1}/"
                while not any(expected in line for line in lines):
                    assert time.monotonic() < deadline, f"no progress line for iter {it + 1}"
                    time.sleep(0.01)
            # A model that predicts nothing: metrics.json writes its NaN AP as a string.
            f.write(json.dumps({"iteration": max_iter, "bbox/AP": "NaN"}) + "\n")
        (out / "model_final.pth").write_bytes(b"final")
        return 0

    outcome = run_sweep(runs, runner, echo=lines.append, progress_seconds=0, poll_seconds=0.01)
    assert len(outcome["done"]) == 2
    first = f"[1/2] {STEM}/frn/ipg1/seed0: "
    # 2380 iterations left at 0.5 s; then ipg4's 2400 images at this run's 0.5 s an image.
    assert (
        first + "iter 20/2400 (1%), total_loss 1.810, 0.50 s/iter, ETA 19m50s (sweep ~39m50s)"
        in lines
    )
    assert (
        first + "iter 40/2400 (2%), total_loss 1.610, 0.50 s/iter, ETA 19m40s (sweep ~39m40s)"
        in lines
    )
    second = f"[2/2] {STEM}/frn/ipg4/seed0: "
    assert second + "iter 40/600 (7%), total_loss 1.610, 0.50 s/iter, ETA 4m40s (sweep ~4m40s)" in (
        lines
    )
    # Each record is reported once, in order, between the run's start and end lines.
    progress = [line for line in lines if ": iter " in line]
    assert len(progress) == 4
    assert lines.index(progress[0]) > 0 and "done in" in lines[lines.index(progress[1]) + 1]
    assert lines[-1].endswith("; bbox/AP nan")


def test_progress_lines_are_throttled_and_the_last_record_is_shown_at_the_end(tmp_path):
    [run] = _grid(tmp_path, norms=["gn"], ims_per_gpu=[4])
    lines = []

    def runner(command, log_path):
        with (run.output_dir / "metrics.json").open("a") as f:
            for it in (19, 39, 59):
                f.write(json.dumps({"iteration": it, "total_loss": 1.0}) + "\n")
                f.flush()
                deadline = time.monotonic() + 10
                while it == 19 and not any(": iter 20/" in line for line in lines):
                    assert time.monotonic() < deadline, "no progress line for iter 20"
                    time.sleep(0.01)
        return 1

    run_sweep([run], runner, echo=lines.append, progress_seconds=3600, poll_seconds=0.01)
    # Without detectron2's timing the wall clock gives s/iter and ETA.
    assert [line.split(": ", 1)[1].split(",")[0] for line in lines if ": iter " in line] == [
        "iter 20/600 (3%)",
        "iter 60/600 (10%)",
    ]
    assert "s/iter, ETA " in lines[-2] and lines[-1].startswith("[1/1] ") and "FAILED" in lines[-1]


def test_progress_of_a_resumed_run_starts_at_its_checkpoint(tmp_path):
    [run] = _grid(tmp_path, norms=["gn"], ims_per_gpu=[4])
    run.output_dir.mkdir(parents=True)
    metrics = run.output_dir / "metrics.json"
    old = [json.dumps({"iteration": it, "total_loss": 1.0}) + "\n" for it in range(19, 160, 20)]
    metrics.write_text("".join(old))
    (run.output_dir / "model_0000099.pth").write_bytes(b"ckpt")
    (run.output_dir / "last_checkpoint").write_text("model_0000099.pth")
    lines = []

    def runner(command, log_path):
        assert "--resume" in command
        # As train_net does on --resume: the lines of iterations >= 100 move away (the file
        # shrinks), then training appends from iteration 100.
        metrics.write_text("".join(line for line in old if json.loads(line)["iteration"] < 100))
        with metrics.open("a") as f:
            f.write(json.dumps({"iteration": 119, "total_loss": 0.5}) + "\n")
        return 1

    run_sweep([run], runner, echo=lines.append, progress_seconds=0, poll_seconds=0.01)
    progress = [line.split(": ", 1)[1].split(",")[:2] for line in lines if ": iter " in line]
    assert progress == [["iter 120/600 (20%)", " total_loss 0.500"]]


def test_a_tiny_real_run_goes_through_train_net_and_is_skipped_the_second_time(
    tmp_path, tiny_shapes, monkeypatch, capsys
):
    monkeypatch.setenv("DETECTRON2_DATASETS", os.fspath(tiny_shapes))
    calls = []

    def counting_runner(command, log_path):
        calls.append(command)
        return subprocess_runner(command, log_path)

    out = tmp_path / "out"
    # Written for 1 image and 4 iterations: 2 images per GPU halves it to 2 iterations.
    argv = ["--configs", SHAPES_TEMPLATE, "--norms", "frn", "--ims-per-gpu", "2"]
    argv += ["--output", str(out), "MODEL.FRN.IMPL", "autograd", "DATALOADER.NUM_WORKERS", "0"]
    argv += ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64"]
    argv += ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"]
    argv += ["SOLVER.IMS_PER_BATCH", "1", "SOLVER.REFERENCE_WORLD_BATCH", "1"]
    argv += ["SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1"]
    assert main(argv, counting_runner) == 0, (
        out / STEM / "frn/ipg2/seed0/train_net.log"
    ).read_text()
    folder = out / STEM / "frn" / "ipg2" / "seed0"
    done = json.loads((folder / "DONE.json").read_text())
    # The Shapes BASE_LR of 0.04 doubles with the batch; the plan is what train_net ran.
    assert done["schedule"] == {"ims_per_batch": 2, "base_lr": 0.08, "max_iter": 2}
    trained = yaml.safe_load((folder / "config.yaml").read_text())["SOLVER"]
    assert (trained["IMS_PER_BATCH"], trained["BASE_LR"], trained["MAX_ITER"]) == (2, 0.08, 2)
    assert {"bbox/AP", "segm/AP"} <= done["results"].keys()
    assert (folder / "model_final.pth").is_file()

    # The run's one metrics record, shown by the sweep (at its end, with 2 iterations).
    assert f"{STEM}/frn/ipg2/seed0: iter 2/2 (100%), total_loss " in capsys.readouterr().out

    assert main(argv, counting_runner) == 0
    assert len(calls) == 1
    assert "1 already done" in capsys.readouterr().out

    table = summarize(out, curves=False)["table"].read_text()
    assert "| frn |" in re.sub(" +", " ", table)  # tabulate pads cells


def test_the_script_runs_from_a_checkout():
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "sweep.py"), "--help"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--configs", "--norms", "--ims-per-gpu", "--norm-gpus", "--repeats", "--dry-run"):
        assert flag in done.stdout


def test_a_schedule_typed_for_the_sweep_is_rescaled_from_the_configs_reference_batch(tmp_path):
    runs = _grid(tmp_path, norms=["gn"], ims_per_gpu=[1, 8], opts=["SOLVER.MAX_ITER", "400"])
    # the Shapes configs' schedule is written for 4 images
    assert all(r.opts[-2:] == ("SOLVER.REFERENCE_WORLD_BATCH", "4") for r in runs)
    from frn_det_tools.sweep import plan_schedule

    assert [plan_schedule(r).max_iter for r in runs] == [1600, 200]
    typed = _grid(
        tmp_path,
        norms=["gn"],
        ims_per_gpu=[8],
        opts=["SOLVER.MAX_ITER", "400", "SOLVER.REFERENCE_WORLD_BATCH", "8"],
    )
    assert typed[0].opts.count("SOLVER.REFERENCE_WORLD_BATCH") == 1
    assert plan_schedule(typed[0]).max_iter == 400


def test_a_config_value_out_of_its_range_ends_the_sweep_in_one_line_with_status_2(
    tmp_path, capsys
):
    argv = ["--configs", SHAPES_TEMPLATE, "--norms", "gn", "--ims-per-gpu", "1"]
    argv += ["--output", str(tmp_path / "out"), "--dry-run", "MODEL.FRN.EPS", "-1"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "MODEL.FRN.EPS must be a finite number > 0" in err and "\n" not in err


def test_done_json_is_strict_json_even_for_a_nan_ap(tmp_path):
    from frn_det_tools.sweep import _write_json

    path = tmp_path / "DONE.json"
    _write_json(path, {"results": {"bbox": {"AP": float("nan"), "AP50": 1.5}}})

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data["results"]["bbox"] == {"AP": "NaN", "AP50": 1.5}


def test_the_fixed_batch_design_splits_one_total_batch_and_schedule_into_processes(tmp_path):
    from frn_det_tools.sweep import plan_schedule

    runs = _grid(tmp_path, norms=["gn", "frn_pa"], ims_per_gpu=[1, 2, 4, 8], total_batch=8)
    assert [(r.norm, r.ims_per_gpu, r.num_gpus) for r in runs] == [
        (norm, n, 8 // n) for norm in ("gn", "frn_pa") for n in (1, 2, 4, 8)
    ]
    assert all(r.design == "fixed_batch" for r in runs)
    assert {r.output_dir.relative_to(tmp_path).parts[0] for r in runs} == {
        f"{STEM}_fixed_batch8"
    }
    # the images of a step must not depend on the split
    for r in runs:
        assert r.opts[r.opts.index("DATALOADER.ASPECT_RATIO_GROUPING") + 1] == "False"
    # frn_pa: the frn config, padding-aware
    pa = [r for r in runs if r.norm == "frn_pa"]
    assert all(r.padding_aware and r.config.name.endswith("_frn.yaml") for r in pa)
    assert all(r.opts[r.opts.index("MODEL.PADDING_AWARE_NORM") + 1] == "True" for r in pa)
    schedules = {(s.ims_per_batch, s.base_lr, s.max_iter) for s in map(plan_schedule, runs[:4])}
    assert len(schedules) == 1 and next(iter(schedules))[0] == 8


def test_a_total_batch_the_images_per_gpu_do_not_divide_or_with_process_counts_is_refused(
    tmp_path,
):
    with pytest.raises(SweepError, match=r"images per GPU \[3\] do not divide the total batch 8"):
        _grid(tmp_path, ims_per_gpu=[1, 3], total_batch=8)
    with pytest.raises(SweepError, match="leave out --num-gpus and --norm-gpus"):
        _grid(tmp_path, total_batch=8, num_gpus=2)


def test_run_records_name_the_design_and_padding_awareness(tmp_path, fake_runner):
    runs = _grid(tmp_path, norms=["gn_pa"], ims_per_gpu=[2], total_batch=4)
    run_sweep(runs, fake_runner(), progress_seconds=0)
    from frn_det_tools.summarize import collect_runs

    (record,) = collect_runs(tmp_path)
    row = record.to_json()
    assert row["design"] == "fixed_batch" and row["padding_aware"] is True
    assert (row["images_per_gpu"], row["gpus"], row["total_batch"]) == (2, 2, 4)
    assert {"seed", "iterations", "box_AP", "mask_AP"} <= row.keys()
