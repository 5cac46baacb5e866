"""TEST.PRECISE_BN.FINAL_ONLY and EVAL_RUNNING: when the BN statistics are recomputed, and
an evaluation with the running statistics before they are."""

from __future__ import annotations

import json
from pathlib import Path

from frn_det.engine import Trainer, setup
from frn_det.engine import trainer as trainer_module

BN_CONFIG = Path(__file__).resolve().parents[2] / "configs/Shapes/mask_rcnn_R_18_FPN_bn.yaml"


def _train(tiny_args, output_dir: Path, monkeypatch, *opts: str) -> list[str]:
    """Train the tiny BN Mask R-CNN 4 iterations with an evaluation every 2; the order in
    which precise BN and evaluations ran."""
    events: list[str] = []
    update_stats = trainer_module.SyncedPreciseBN.update_stats
    test = Trainer.test.__func__

    def recording_update_stats(self):
        events.append("precise")
        update_stats(self)

    def recording_test(cls, cfg, model, evaluators=None):
        events.append("eval")
        return test(cls, cfg, model, evaluators)

    monkeypatch.setattr(trainer_module.SyncedPreciseBN, "update_stats", recording_update_stats)
    monkeypatch.setattr(Trainer, "test", classmethod(recording_test))
    args = tiny_args(
        output_dir,
        config=BN_CONFIG,
        max_iter=4,
        opts=["TEST.EVAL_PERIOD", "2", "TEST.PRECISE_BN.NUM_ITER", "2", *opts],
    )
    trainer = Trainer(setup(args))
    trainer.resume_or_load(resume=False)
    trainer.train()
    return events


def _last_record(output_dir: Path) -> dict:
    lines = (output_dir / "metrics.json").read_text().splitlines()
    return max((json.loads(line) for line in lines), key=lambda r: r["iteration"])


def test_final_only_recomputes_once_at_the_end_after_a_running_statistics_evaluation(
    tiny_args, tmp_path, monkeypatch
):
    opts = ["TEST.PRECISE_BN.FINAL_ONLY", "True", "TEST.PRECISE_BN.EVAL_RUNNING", "True"]
    events = _train(tiny_args, tmp_path, monkeypatch, *opts)
    # The evaluation at iteration 2 uses the running statistics; at the end the running
    # statistics are evaluated, then recomputed once, then evaluated again.
    assert events == ["eval", "eval", "precise", "eval"]
    record = _last_record(tmp_path)
    assert record["iteration"] == 4
    assert {"bbox/AP", "segm/AP", "running_stats/bbox/AP", "running_stats/segm/AP"} <= set(record)


def test_by_default_precise_bn_runs_before_every_evaluation_as_in_detectron2(
    tiny_args, tmp_path, monkeypatch
):
    events = _train(tiny_args, tmp_path, monkeypatch)
    assert events == ["precise", "eval", "precise", "eval"]
    assert not any(k.startswith("running_stats/") for k in _last_record(tmp_path))
