"""frn_det.file_io: a file is replaced whole or not at all, durably, and a killed writer's
temporary file is told apart from a live writer's."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from frn_det import file_io
from frn_det.file_io import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    stale_temporary_files,
)


def test_readers_see_the_old_file_until_the_new_one_is_complete(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")
    seen = {}

    def write(f):
        f.write(b"new, part 1")
        seen["during"] = path.read_text()
        seen["temporary"] = Path(f.name)
        f.write(b", part 2")

    atomic_write(path, write)
    assert seen["during"] == "old"
    assert seen["temporary"].parent == tmp_path and seen["temporary"].name.startswith(".")
    assert path.read_text() == "new, part 1, part 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_write_that_raises_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")

    def write(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, write)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_the_file_is_fsynced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(f"fsync {kind}")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "notes.md", "text")
    expected = ["fsync file", "rename"] + (["fsync folder"] if os.name == "posix" else [])
    assert events == expected


def test_json_is_strict_sorted_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "DONE.json"
    atomic_write_json(path, {"b": 1, "a": [1.5, "NaN"]})
    assert path.read_text() == json.dumps({"a": [1.5, "NaN"], "b": 1}, indent=2) + "\n"
    with pytest.raises(ValueError):
        atomic_write_json(path, {"AP": float("nan")})
    assert json.loads(path.read_text()) == {"a": [1.5, "NaN"], "b": 1}


# A writer killed in the middle of a write (os._exit skips every clean-up). The module is
# loaded from its file so that the child does not import detectron2 (frn_det's __init__).
KILLED_WRITER = r"""
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("file_io", sys.argv[1])
file_io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(file_io)

def write(f):
    f.write(b"PK\x03\x04partial")
    f.flush()
    os._exit(0)

file_io.atomic_write(sys.argv[2], write)
"""


def test_only_temporary_files_of_killed_writers_of_this_host_are_stale(tmp_path):
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, file_io.__file__, str(tmp_path / "model.pth")],
        capture_output=True,
        text=True,
    )
    assert killed.returncode == 0, killed.stderr
    (left,) = (p for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    host = socket.gethostname()
    live = tmp_path / f".model_0000002.pth.{host}.{os.getpid()}.tmp"
    elsewhere = tmp_path / f".model_0000003.pth.other-host.{left.name.split('.')[-2]}.tmp"
    for path in (live, elsewhere):
        path.write_bytes(b"partial")
    assert not (tmp_path / "model.pth").exists()
    assert stale_temporary_files(tmp_path) == [str(left)]
    assert stale_temporary_files(tmp_path / "missing") == []
