"""Atomic writes: all-or-nothing, ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from hwnas.fileio import atomic_path, write_json, write_text


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    p = tmp_path / "out.json"
    write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_written_files_get_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_json(tmp_path / "a" / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    assert p.read_text().strip() == '{\n  "x": 1\n}'
