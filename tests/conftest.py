"""Fixtures shared by the whole suite.

The corpus is read from ``../shared/data/nottingham`` beside the checkout (or
``$MUSIC_ATTR_VAE_CORPUS``); it is never copied into the repository.  The
expensive fixtures (a prepared dataset, a trained ``quick`` model) are
session-scoped so the suite pays for them once.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s (deselect with -m 'not slow')")


def _corpus_dir() -> pathlib.Path:
    env = os.environ.get("MUSIC_ATTR_VAE_CORPUS")
    return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "nottingham"


@pytest.fixture(scope="session")
def nottingham_dir() -> pathlib.Path:
    path = _corpus_dir()
    if not any(path.glob("*.abc")):
        pytest.fail(f"the Nottingham corpus is missing: no *.abc under {path} (set MUSIC_ATTR_VAE_CORPUS)")
    return path


@pytest.fixture(scope="session")
def small_abc_dir(tmp_path_factory, nottingham_dir) -> pathlib.Path:
    """Two real tune books (reels u-z and the Christmas tunes): small enough to train on in seconds."""
    out = tmp_path_factory.mktemp("small_abc")
    for name in ("reelsu-z.abc", "xmas.abc"):
        shutil.copy(nottingham_dir / name, out / name)
    return out


@pytest.fixture(scope="session")
def prepared_small(tmp_path_factory, small_abc_dir) -> pathlib.Path:
    """TFRecord shards of the small corpus, with transpositions limited to +-2."""
    from music_attr_vae.data import prepare

    out = tmp_path_factory.mktemp("prepared_small")
    prepare.prepare(str(small_abc_dir), str(out), max_shift=2, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def quick_workdir(tmp_path_factory, prepared_small) -> pathlib.Path:
    """A `quick` model trained briefly on the small corpus, with its SavedModel exported."""
    from music_attr_vae import training
    from music_attr_vae.configs_loader import load_config

    workdir = tmp_path_factory.mktemp("quick") / "run"
    config = load_config(str(CONFIGS_DIR / "quick.py"))
    training.train(config, str(workdir), source=str(prepared_small))
    return workdir

