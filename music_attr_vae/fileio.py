"""Atomic writes of files and directories, with the permissions an ordinary write would get.

Every file and folder the package writes goes through this module: it is built
under a temporary name beside its target (``.NAME.tmp-XXXX``) and renamed onto
it, so a reader never sees half of it and a killed process leaves at most a
hidden temporary behind.  ``tempfile`` makes its files 0600 and its folders
0700; here they get ``0666 & ~umask`` and ``0777 & ~umask`` like ``open`` and
``mkdir`` would, so outputs are as shareable as the user's umask says.

This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator, Sequence

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


def temp_prefix(target: str) -> str:
    """The prefix of every temporary this module makes for ``target``: ``.NAME.tmp-``."""
    return f".{os.path.basename(os.path.abspath(target))}{TEMP_MARK}"


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


def swap_dir_into_place(new_dir: str, target: str) -> None:
    """Rename ``new_dir`` onto ``target``; an existing ``target`` is moved aside first and removed after.

    The caller must already know that ``target`` holds only what this package
    wrote there.  If the second rename fails the old folder is put back.
    """
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(target)),
                               prefix=f".{os.path.basename(os.path.abspath(target))}{OLD_MARK}")
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
