"""The `music-attr-vae` dispatcher: usage, unknown subcommands, per-subcommand help and flag errors."""

from __future__ import annotations

import subprocess
import sys


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "music_attr_vae", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_usage_lists_every_subcommand():
    from music_attr_vae import cli

    bare = _cli()
    assert bare.returncode == 2
    for name in cli.SUBCOMMANDS:
        assert name in bare.stdout
    assert _cli("--help").returncode == 0


def test_unknown_subcommand_is_named():
    run = _cli("trian")
    assert run.returncode == 2 and "unknown subcommand 'trian'" in run.stderr


def test_help_of_one_subcommand_lists_only_its_flags():
    run = _cli("prepare", "--help")
    assert run.returncode == 0
    assert "--output_dir" in run.stdout and "--source" in run.stdout
    assert "--saved_model" not in run.stdout  # a flag of `generate`/`evaluate`, not of `prepare`


def test_a_bad_flag_is_named(tmp_path):
    run = _cli("prepare", f"--output_dir={tmp_path / 'out'}", "--jobz=2")
    assert run.returncode != 0 and "jobz" in run.stderr
    assert not (tmp_path / "out").exists()
