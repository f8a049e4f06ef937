"""Atomic writes of files and directories, with the permissions an ordinary write would get.

Every file and folder the package writes goes through this module: it is built
under a temporary name beside its target (``.NAME.tmp-XXXX``) and renamed onto
it, so a reader never sees half of it and a killed process leaves at most a
hidden temporary behind.  ``tempfile`` makes its files 0600 and its folders
0700; here they get ``0666 & ~umask`` and ``0777 & ~umask`` like ``open`` and
``mkdir`` would, so outputs are as shareable as the user's umask says.

Every temporary carries the writer's pid (``.NAME.tmp-PID-XXXX``,
``.NAME.old-PID-XXXX``), so :func:`recover_dir` can tell a killed writer's
leftovers from a running one's: it removes those of dead pids and puts back a
folder that a kill left moved aside.  Nothing that does not match this naming
is ever touched.  On Linux a folder is swapped in with one
``renameat2(RENAME_EXCHANGE)``, so there is no moment without the folder.

This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Callable, Iterator, List, Optional, Sequence

TEMP_MARK = ".tmp-"
OLD_MARK = ".old-"


def umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def temp_prefix(target: str, mark: str = TEMP_MARK) -> str:
    """The prefix of the temporaries this process makes for ``target``: ``.NAME.tmp-PID-``."""
    return f".{os.path.basename(os.path.abspath(target))}{mark}{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else remove it.

    ``suffix`` keeps an extension for writers that look at it (matplotlib, numpy).
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=temp_prefix(path), suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text(path: str, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, data, *, indent: int = 1, sort_keys: bool = False, allow_nan: bool = True) -> None:
    """Write ``data`` as JSON (with a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan) + "\n")


def make_temp_dir(target: str) -> str:
    """A new empty folder beside ``target`` (``.NAME.tmp-XXXX``), with the umask's permissions."""
    parent = os.path.dirname(os.path.abspath(target))
    tmp = tempfile.mkdtemp(dir=parent, prefix=temp_prefix(target))
    os.chmod(tmp, dir_mode())
    return tmp


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2():
    """libc's ``renameat2`` (Linux, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _load_renameat2()


def exchange(a: str, b: str) -> bool:
    """Atomically swap two existing paths; False when the system cannot (then nothing changed)."""
    if _renameat2 is None:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def swap_dir_into_place(new_dir: str, target: str) -> None:
    """Put ``new_dir`` at ``target``; an existing ``target`` is removed after.

    The caller must already know that ``target`` holds only what this package
    wrote there.  Where ``renameat2(RENAME_EXCHANGE)`` works the two folders
    trade places in one step (a kill then leaves the old one under the
    temporary name, which :func:`recover_dir` removes).  Elsewhere the old
    folder is first renamed to ``.NAME.old-PID-XXXX``; if the second rename
    fails it is put back, and if the process is killed in between,
    :func:`recover_dir` puts it back on the next run.
    """
    if os.path.isdir(target) and not os.path.islink(target) and exchange(new_dir, target):
        shutil.rmtree(new_dir, ignore_errors=True)  # now holds the old folder
        return
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(target)), prefix=temp_prefix(target, OLD_MARK))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(new_dir, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- a set of output files, all or nothing


def check_output_dir(out_dir: str, names: Sequence[str], manifest: str) -> None:
    """Refuse an ``out_dir`` that is a file, or that holds one of ``names`` another program wrote.

    A file named in ``names`` may be replaced only when ``out_dir/manifest``
    (a JSON document with ``"files": {key: name}``, written by an earlier run)
    lists it; other files in ``out_dir`` are never touched.  Raises
    FileExistsError naming the files at fault.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    present = [name for name in names if os.path.lexists(os.path.join(out_dir, name))]
    if not present:
        return
    try:
        with open(os.path.join(out_dir, manifest), encoding="utf-8") as handle:
            owned = set((json.load(handle).get("files") or {}).values())
    except (OSError, ValueError, AttributeError):
        owned = set()
    foreign = [name for name in present if name not in owned or not os.path.isfile(os.path.join(out_dir, name))]
    if foreign:
        raise FileExistsError(
            f"{out_dir} already holds {', '.join(foreign)}, not written by an earlier run of this command "
            f"(its {manifest} does not list them); move them away or choose another folder"
        )


def publish_files(out_dir: str, names: Sequence[str], manifest: str, write: Callable[[str], None]) -> None:
    """Write the files ``names`` into ``out_dir`` all or nothing.

    ``write(staging)`` writes every one of them into a hidden folder inside
    ``out_dir``; only when it succeeds is each moved into place (an earlier
    run's file of the same name is moved aside, and put back if a later move
    fails).  On any failure ``out_dir`` is left as it was (a folder this call
    created is removed again).  ``check_output_dir`` rules apply.
    """
    recover_outputs(out_dir)
    check_output_dir(out_dir, names, manifest)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    staging = None
    moved: list = []
    try:
        staging = make_temp_dir(os.path.join(out_dir, "outputs"))
        write(staging)
        aside = os.path.join(staging, OLD_MARK)
        os.mkdir(aside)
        for name in names:
            target = os.path.join(out_dir, name)
            had_old = os.path.lexists(target)
            if had_old:
                os.replace(target, os.path.join(aside, name))
            moved.append((name, had_old))
            os.replace(os.path.join(staging, name), target)
    except BaseException:
        for name, had_old in reversed(moved):
            target = os.path.join(out_dir, name)
            if os.path.lexists(target) and staging and not os.path.lexists(os.path.join(staging, name)):
                os.replace(target, os.path.join(staging, name))
            if had_old:
                os.replace(os.path.join(staging, OLD_MARK, name), target)
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)
        raise
    shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------ leftovers of killed writers


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _leftovers(target: str, mark: str) -> List[tuple]:
    """``(path, pid)`` of the temporaries named ``.NAME<mark>PID-XXXX`` beside ``target``."""
    target = os.path.abspath(target)
    parent, name = os.path.dirname(target), os.path.basename(target)
    pattern = re.compile(re.escape(f".{name}{mark}") + r"(\d+)-[A-Za-z0-9_]+(\.[A-Za-z0-9]+)?")
    try:
        entries = sorted(os.listdir(parent))
    except OSError:
        return []
    found = []
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match:
            found.append((os.path.join(parent, entry), int(match.group(1))))
    return found


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)


def recover_dir(target: str) -> Optional[str]:
    """Clean up after writers of ``target`` that were killed; returns the path restored, if any.

    A ``.NAME.old-PID-*`` folder of a dead process is moved back to ``target``
    when ``target`` is missing (a kill between the two renames of
    :func:`swap_dir_into_place`) and removed otherwise; ``.NAME.tmp-PID-*``
    entries of dead processes are removed.  Leftovers of live processes, and
    anything not named by this module, are left alone.
    """
    restored = None
    for path, pid in _leftovers(target, OLD_MARK):
        if pid_alive(pid):
            continue
        if restored is None and not os.path.lexists(target):
            os.replace(path, target)
            restored = path
        else:
            _remove(path)
    for path, pid in _leftovers(target, TEMP_MARK):
        if not pid_alive(pid):
            _remove(path)
    return restored


def recover_outputs(out_dir: str) -> List[str]:
    """Undo what a :func:`publish_files` killed midway left in ``out_dir``; returns the files put back.

    Its hidden staging folder (``.outputs.tmp-PID-*``, of a dead process only)
    may hold, in its ``.old-`` folder, earlier files it had moved aside: each
    one whose place is still empty is moved back.  Then the staging folder is
    removed.  Nothing else is touched.
    """
    restored = []
    for staging, pid in _leftovers(os.path.join(out_dir, "outputs"), TEMP_MARK):
        if pid_alive(pid):
            continue
        aside = os.path.join(staging, OLD_MARK)
        for name in sorted(os.listdir(aside)) if os.path.isdir(aside) else []:
            target = os.path.join(out_dir, name)
            if not os.path.lexists(target):
                os.replace(os.path.join(aside, name), target)
                restored.append(target)
        _remove(staging)
    return restored
