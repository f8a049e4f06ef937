"""fileio: atomic writes, directory swaps, and permissions that follow the umask."""

import json
import os
import stat

import pytest

from music_attr_vae import fileio


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_dirs_follow_the_umask(tmp_path, umask_027):
    fileio.write_text(str(tmp_path / "a.txt"), "x")
    fileio.write_json(str(tmp_path / "b.json"), {"k": 1})
    new = fileio.make_temp_dir(str(tmp_path / "out"))
    assert _mode(tmp_path / "a.txt") == 0o640
    assert _mode(tmp_path / "b.json") == 0o640
    assert _mode(new) == 0o750
    assert json.loads((tmp_path / "b.json").read_text()) == {"k": 1}
    assert os.path.basename(new).startswith(".out.tmp-")


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_swap_dir_into_place_replaces_and_restores(tmp_path, monkeypatch):
    target = tmp_path / "saved_model"
    target.mkdir()
    (target / "old").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "fresh").write_text("fresh")
    fileio.swap_dir_into_place(str(new), str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]
    assert (target / "fresh").read_text() == "fresh"

    broken = tmp_path / "broken"
    broken.mkdir()
    real_replace = os.replace

    def failing_replace(src, dst):
        if src == str(broken):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        fileio.swap_dir_into_place(str(broken), str(target))
    assert (target / "fresh").read_text() == "fresh"  # the previous folder is back in place
