"""The training workdir: its layout, its lock, and loading the model it holds.

Every file name inside a workdir is defined here and nowhere else::

    DIR/config.json          the resolved config + "data_dir" (the prepared shards) + "run" info
    DIR/data/                shards prepared on the fly (when --source is not a prepared dir)
    DIR/checkpoints/         tf.train checkpoints: model, optimizer, epoch and step-in-epoch
    DIR/tensorboard/{train,validation,eval}/
    DIR/history.jsonl        one JSON line per event (start/resume, epoch, NaN stop, export)
    DIR/saved_model/         the exported SavedModel (music_attr_vae.serving.export)
    DIR/eval/                metrics.json and figures of ``music-attr-vae evaluate``
    DIR/.lock                held (``flock``) by the process training in DIR

**The lock.**  ``train`` holds an exclusive ``flock`` on ``DIR/.lock`` for as
long as it runs, so a second ``train`` on the same folder is refused with a
message naming the holder (pid, host, start time and command, written inside
the file).  The kernel drops the lock when its holder exits, however it
dies (SIGKILL included), so a stale lock never blocks a resume; the file's
contents are only a description, never trusted as the lock itself.

**Intact checkpoints.**  :func:`intact_checkpoint` walks the checkpoints of
DIR/checkpoints newest first and reads every tensor of each until one reads
back whole; the ones that do not (a truncated ``.data`` file, a damaged
index) are reported by file name.  Resuming and :func:`load_model` (hence
``evaluate``) use it, so one damaged file costs the steps since the previous
checkpoint instead of the whole run.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import glob
import json
import os
import socket
import sys
from typing import Callable, List, Optional, Tuple

from music_attr_vae import configs_loader

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_DIR = "checkpoints"
SAVED_MODEL_DIR = "saved_model"
EVAL_DIR = "eval"
DATA_DIR = "data"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"
WORKER_SCRATCH_PREFIX = ".worker-"
# Extra top-level keys of config.json that are not config fields.
RUN_KEYS = ("data_dir", "run")


class WorkdirBusyError(RuntimeError):
    """Another process holds the workdir's lock."""


class NoIntactCheckpointError(FileNotFoundError):
    """Every checkpoint of a workdir is damaged (or there is none)."""


def path(workdir: str, *parts: str) -> str:
    """``os.path.join(workdir, *parts)``, for the names defined above."""
    return os.path.join(workdir, *parts)


def is_workdir(folder: str) -> bool:
    """Whether ``folder`` looks like a training workdir (it has a config.json)."""
    return os.path.isfile(path(folder, CONFIG_FILE))


def tensorboard_dir(workdir: str, split: str) -> str:
    return path(workdir, TENSORBOARD_DIR, split)


def worker_scratch(workdir: str, task_id: int) -> str:
    return path(workdir, f"{WORKER_SCRATCH_PREFIX}{task_id}")


# ---------------------------------------------------------------- config and history


def read_workdir_config(workdir: str) -> Tuple[dict, dict]:
    """(config fields, run fields) from DIR/config.json."""
    config_path = path(workdir, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path} not found: {workdir} is not a training workdir")
    with open(config_path, encoding="utf-8") as f:
        data = json.load(f)
    run = {k: data.pop(k) for k in RUN_KEYS if k in data}
    return data, run


def data_dir_of(workdir: str) -> str:
    """The prepared data dir a workdir was trained on, from DIR/config.json."""
    if not is_workdir(workdir):
        raise FileNotFoundError(f"--workdir={workdir} has no {CONFIG_FILE}: is it a training workdir?")
    fields, run = read_workdir_config(workdir)
    data_dir = run.get("data_dir") or (fields.get("data") or {}).get("data_dir")
    if not data_dir:
        raise ValueError(f"{path(workdir, CONFIG_FILE)} records no data_dir; pass --data_dir")
    return data_dir if os.path.isabs(data_dir) else path(workdir, data_dir)


def read_history(workdir: str) -> List[dict]:
    """The events of DIR/history.jsonl, oldest first."""
    history = path(workdir, HISTORY_FILE)
    if not os.path.exists(history):
        return []
    with open(history, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- the lock


class WorkdirLock:
    """An exclusive ``flock`` on DIR/.lock, released by ``release`` or by the process's death."""

    def __init__(self, workdir: str):
        self.path = path(workdir, LOCK_FILE)
        self.fd: Optional[int] = None

    def acquire(self) -> "WorkdirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # 0666 & ~umask, like any file
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise WorkdirBusyError(
                f"--workdir={os.path.dirname(self.path)} is in use: {self.holder()} holds {self.path}; "
                "wait for it to finish (or stop it), or use another --workdir"
            ) from None
        holder = {
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        self.fd = fd
        return self

    def holder(self) -> str:
        """The holder as written in the lock file (best effort: it may be mid-write)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                info = json.loads(f.read() or "{}")
            return (f"process {info['pid']} on {info['host']} (started {info['started']}: "
                    f"{info.get('command', '?')})")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------- checkpoints


def _checkpoint_files(prefix: str) -> List[str]:
    return sorted(glob.glob(prefix + ".data-*")) + [prefix + ".index"]


def checkpoint_problem(prefix: str) -> Optional[str]:
    """None when every tensor of checkpoint ``prefix`` reads back; else which file is bad and why."""
    import tensorflow as tf

    index = prefix + ".index"
    if not os.path.isfile(index):
        return f"{index} is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        return f"{index} cannot be read ({err.message if hasattr(err, 'message') else err})"
    data = [f for f in _checkpoint_files(prefix) if not f.endswith(".index")]
    try:
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except (tf.errors.OpError, ValueError, IndexError) as err:
        message = getattr(err, "message", None) or str(err)
        return f"{', '.join(data) or prefix + '.data-*'} cannot be read ({message.strip().splitlines()[0]})"
    return None


def checkpoint_prefixes(checkpoint_dir: str) -> List[str]:
    """The checkpoints listed by the index of ``checkpoint_dir``, newest first."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(checkpoint_dir)
    if state is None:
        return []
    listed = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    prefixes = [p if os.path.isabs(p) else os.path.join(checkpoint_dir, p) for p in listed]
    return sorted(set(prefixes), key=lambda p: int(p.rsplit("-", 1)[1]) if p.rsplit("-", 1)[1].isdigit() else -1,
                  reverse=True)


def intact_checkpoint(checkpoint_dir: str, say: Callable[[str], None] = None) -> Tuple[Optional[str], List[str]]:
    """(newest intact checkpoint or None, the problems of the newer damaged ones).

    Each damaged checkpoint skipped is reported through ``say``.  When there
    are checkpoints but none is intact, raises :class:`NoIntactCheckpointError`
    naming them all (starting over silently would throw the run away).
    """
    problems: List[str] = []
    prefixes = checkpoint_prefixes(checkpoint_dir)
    for prefix in prefixes:
        problem = checkpoint_problem(prefix)
        if problem is None:
            if problems and say:
                say(f"using {os.path.basename(prefix)}, the newest intact checkpoint")
            return prefix, problems
        problems.append(problem)
        if say:
            say(f"skipping the damaged checkpoint {os.path.basename(prefix)}: {problem}")
    if prefixes:
        raise NoIntactCheckpointError(
            f"no intact checkpoint in {checkpoint_dir}: {'; '.join(problems)}. "
            "Move the damaged files away to start over."
        )
    return None, problems


def _warn(message: str) -> None:
    print(f"[workdir] {message}", file=sys.stderr, flush=True)


def load_model(workdir: str, say: Callable[[str], None] = _warn):
    """(model, config) of a training workdir, with its newest intact checkpoint's weights."""
    import tensorflow as tf

    from music_attr_vae.model.vae import build_model

    workdir = os.path.abspath(workdir)
    fields, _ = read_workdir_config(workdir)
    config = configs_loader.from_dict(fields)
    checkpoint_dir = path(workdir, CHECKPOINT_DIR)
    latest, _ = intact_checkpoint(checkpoint_dir, say)
    if not latest:
        raise NoIntactCheckpointError(f"no checkpoint in {checkpoint_dir}")
    model = build_model(config)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    return model, config
