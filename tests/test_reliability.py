"""Issue 21: no lost or silently wrong results. One test (at least) per numbered point, and the
atomic writer they all go through (:mod:`collegial.io`)."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest

from collegial import io
from collegial.errors import UserError


def _full_disk(monkeypatch):
    """Make every write through ``os.fsync`` fail as on a full disk."""

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", no_space)


# ------------------------------------------------------------------------- the atomic writer


def test_atomic_writer_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch) -> None:
    p = tmp_path / "x.json"
    io.write_json_atomic(p, {"a": float("nan"), "b": 1})
    assert json.loads(p.read_text()) == {"a": None, "b": 1}
    _full_disk(monkeypatch)
    with pytest.raises(UserError, match=r"cannot write .*x\.json \(No space left on device\); is the disk full"):
        io.write_json_atomic(p, {"b": 2})
    assert json.loads(p.read_text()) == {"a": None, "b": 1}  # the old file, whole
    assert sorted(f.name for f in tmp_path.iterdir()) == ["x.json"]  # no temporary left
    with pytest.raises(UserError):
        io.write_text_atomic(tmp_path / "new.txt", "hello")
    assert not (tmp_path / "new.txt").exists()  # never an empty file


def test_exclusive_create_and_folder_lock(tmp_path) -> None:
    p = io.write_text_atomic(tmp_path / "a.txt", "first", exclusive=True)
    with pytest.raises(UserError, match="created by another process"):
        io.write_text_atomic(p, "second", exclusive=True)
    assert p.read_text() == "first"
    with io.folder_lock(tmp_path / "d", "sweep"):
        with pytest.raises(io.FolderInUse, match=rf"in use by another sweep \(pid {os.getpid()}\)"):
            with io.folder_lock(tmp_path / "d", "sweep"):
                pass
    with io.folder_lock(tmp_path / "d"):  # released
        pass
    assert io.strict_json({"x": math.inf, "y": [math.nan]}) == '{"x": null, "y": [null]}'
