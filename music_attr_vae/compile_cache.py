"""A persistent XLA compilation cache shared by every ``music-attr-vae`` command.

The train step and the served decoder are compiled with XLA.  Compiling the
small model's train step takes about 20 s on a 2-core CPU, every time a
process starts.  TensorFlow can keep compiled executables on disk
(``--tf_xla_persistent_cache_directory``); with it the second and later runs
of the same model on the same machine load them instead of compiling
(``compile_and_warmup_s`` 34.5 s -> 12.8 s for ``rhy_pr`` in
``bench/bench_train.py``; see BUILD_NOTES "Performance").

The cache lives in ``$MUSIC_ATTR_VAE_XLA_CACHE``, else
``$XDG_CACHE_HOME/music-attr-vae/xla`` (``~/.cache/...``).  Set
``MUSIC_ATTR_VAE_XLA_CACHE=off`` to turn it off.  A cache directory already
named in ``TF_XLA_FLAGS`` is left as it is.  Entries are keyed by the
compiled program's fingerprint, so a changed model never loads a stale one,
and TensorFlow writes each entry to a temporary name before renaming it, so
two processes can share the cache.

:func:`enable` must run before TensorFlow reads its XLA flags (the first XLA
compilation); the CLI calls it before importing a subcommand.
"""

from __future__ import annotations

import os
from typing import Optional

ENV = "MUSIC_ATTR_VAE_XLA_CACHE"
FLAG = "--tf_xla_persistent_cache_directory"
OFF = ("off", "0", "none", "false")


def cache_dir() -> Optional[str]:
    """The cache directory this process would use, or None when turned off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in OFF or not value.strip() else os.path.abspath(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "music-attr-vae", "xla")


def enable() -> Optional[str]:
    """Point TensorFlow's persistent XLA cache at :func:`cache_dir`; returns the directory in use.

    Does nothing (and returns the existing setting) when ``TF_XLA_FLAGS``
    already names a cache directory, and returns None when the cache is off or
    its directory cannot be created (a read-only home just compiles as before).
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    for part in flags.split():
        if part.startswith(FLAG + "="):
            return part.split("=", 1)[1] or None
    directory = cache_dir()
    if directory is None:
        return None
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    os.environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={directory}".strip()
    return directory
