"""tools/batch_leak.py: the alone-vs-batched table it prints is the models' real change."""

from __future__ import annotations

import argparse
import json

import pytest

from frn_det_tools import batch_leak


def test_batch_leak_reports_a_change_without_padding_awareness_and_none_with_it(
    tmp_path, capsys
):
    out = tmp_path / "leak.json"
    results = batch_leak.main(
        ["--rows", "frn,frn:pa,bn:pa", "--sizes", "96", "136", "160", "160", "--json", str(out)]
        + ["MODEL.FRN.IMPL", "autograd"]
    )
    printed = capsys.readouterr().out
    assert "FRN, padding-aware" in printed and "| p2" in printed
    by_row = {(r["norm"], r["padding_aware"]): r["change"] for r in results}
    assert set(by_row[("frn", False)]) == {"p2", "p3", "p4", "p5", "p6"}
    assert min(by_row[("frn", False)].values()) > 1e-2
    assert max(by_row[("frn", True)].values()) < 1e-5
    assert max(by_row[("bn", True)].values()) < 1e-5
    assert json.loads(out.read_text())["results"] == results


def test_a_row_that_is_not_norm_or_norm_pa_is_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="'frn:padded' is not NORM or NORM:pa"):
        batch_leak.parse_row("frn:padded", {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rows", "frn:padded"], "'frn:padded' is not NORM or NORM:pa"),
        (["--rows", "xyz"], "config configs/Shapes/mask_rcnn_R_18_FPN_xyz.yaml"),
        (["--weights", "frn"], "--weights 'frn' is not NORM=PATH"),
        (["--weights", "frn=/no/such.pth"], "/no/such.pth is not a file"),
        (["--json", "/no/such/dir/x.json"], "folder /no/such/dir does not exist"),
    ],
)
def test_bad_flags_exit_with_status_2_naming_them(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        batch_leak.main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
