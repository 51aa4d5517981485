"""Atomic outputs: all or nothing, with ordinary permissions."""
import os
import stat

import pytest

from nasseg.io import atomic_directory, atomic_write_json, atomic_write_text


def test_atomic_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_failed_directory_leaves_old_content(tmp_path):
    atomic_write_json(tmp_path / "d" / "keep.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "d") as d:
            (d / "partial").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["keep.json"]
    with atomic_directory(tmp_path / "d") as d:
        (d / "new").write_text("whole")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["new"]
