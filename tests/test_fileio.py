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
    monkeypatch.setattr(fileio, "_renameat2", None)  # the two-rename fallback
    with pytest.raises(OSError, match="disk full"):
        fileio.swap_dir_into_place(str(broken), str(target))
    assert (target / "fresh").read_text() == "fresh"  # the previous folder is back in place


def _publish(out, texts, manifest="m.json"):
    def write(folder):
        for name, text in texts.items():
            fileio.write_text(os.path.join(folder, name), text)

    fileio.publish_files(str(out), list(texts), manifest, write)


def test_publish_files_puts_everything_back_when_a_move_fails(tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = {"a.txt": "a1", "b.txt": "b1", "m.json": json.dumps({"files": {"a": "a.txt", "b": "b.txt", "m": "m.json"}})}
    _publish(out, first)
    (out / "mine.txt").write_text("keep")
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if str(dst) == str(out / "b.txt") and len(calls) > 3 and not flaky.failed:  # b's move into place, once
            flaky.failed = True
            raise OSError(28, "No space left on device", dst)
        return real(src, dst)

    flaky.failed = False
    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="No space left"):
        _publish(out, {"a.txt": "a2", "b.txt": "b2", "m.json": first["m.json"]})
    monkeypatch.setattr(os, "replace", real)
    assert {p.name: p.read_text() for p in out.iterdir()} == {**first, "mine.txt": "keep"}  # a.txt rolled back too
    _publish(out, {"a.txt": "a2", "b.txt": "b2", "m.json": first["m.json"]})  # an earlier run's files: replaced
    assert (out / "a.txt").read_text() == "a2" and (out / "mine.txt").read_text() == "keep"
    (out / "c.txt").write_text("someone's")
    with pytest.raises(FileExistsError, match="already holds c.txt"):
        _publish(out, {"c.txt": "c", "m.json": first["m.json"]})
    assert (out / "c.txt").read_text() == "someone's"


@pytest.mark.skipif(fileio._renameat2 is None, reason="no renameat2 on this system")
def test_swap_exchanges_in_one_step_where_the_system_can(tmp_path, monkeypatch):
    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    (target / "old").write_text("old")
    new.mkdir()
    (new / "fresh").write_text("fresh")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: renames.append((a, b)) or real_replace(a, b))
    fileio.swap_dir_into_place(str(new), str(target))
    assert renames == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["fresh"]


def test_recover_dir_restores_a_moved_aside_folder_and_removes_dead_leftovers(tmp_path):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, me = child.pid, os.getpid()
    for name in (f".out.old-{dead}-abc", f".out.tmp-{dead}-def", f".out.tmp-{dead}-ghi.part",
                 f".out.tmp-{me}-live", ".out.tmp-x", f".outer.tmp-{dead}-a"):
        (tmp_path / name).mkdir() if "part" not in name else (tmp_path / name).write_text("x")
    (tmp_path / f".out.old-{dead}-abc" / "dataset").write_text("kept")
    assert fileio.recover_dir(str(tmp_path / "out")) == str(tmp_path / f".out.old-{dead}-abc")
    assert (tmp_path / "out" / "dataset").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", f".out.tmp-{me}-live", ".out.tmp-x", f".outer.tmp-{dead}-a"])
    assert not fileio.pid_alive(dead) and fileio.pid_alive(me)


def test_a_publish_killed_between_its_renames_is_undone_by_the_next_one(tmp_path):
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    out = tmp_path / "out"
    manifest = '{"files": {"a": "a.mid", "b": "b.abc", "m": "m.json"}}'
    _publish(out, {"a.mid": "old a", "b.abc": "old b", "m.json": manifest})
    # A run killed after moving b.abc aside and before moving its new one in, and a live run's staging.
    staging = out / f".outputs.tmp-{child.pid}-xyz"
    (staging / ".old-").mkdir(parents=True)
    os.replace(out / "b.abc", staging / ".old-" / "b.abc")
    (staging / "a.mid").write_text("half-written")
    live = out / f".outputs.tmp-{os.getpid()}-live"
    live.mkdir()
    assert fileio.recover_outputs(str(out)) == [str(out / "b.abc")]
    assert (out / "b.abc").read_text() == "old b" and (out / "a.mid").read_text() == "old a"
    assert not staging.exists() and live.exists()  # a live writer's staging is left alone
    live.rmdir()
    (staging / ".old-").mkdir(parents=True)  # again, seen by the next publish itself
    os.replace(out / "a.mid", staging / ".old-" / "a.mid")
    _publish(out, {"b.abc": "new b", "m.json": manifest})
    assert (out / "a.mid").read_text() == "old a" and (out / "b.abc").read_text() == "new b"
    assert sorted(p.name for p in out.iterdir()) == ["a.mid", "b.abc", "m.json"]
