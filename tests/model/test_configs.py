"""Experiment configs: every file loads and builds; overrides; bad values fail naming the field."""

from __future__ import annotations

import pytest

from music_attr_vae.configs_loader import configs_dir, load_config, resolve_config_path

ALL_CONFIGS = sorted(p.stem for p in configs_dir().glob("*.py") if p.stem != "common")


def test_the_issue_configs_exist():
    for name in ("base", "rhy", "pr", "rhy_pr", "all4", "paper", "quick", "beta_vae"):
        assert name in ALL_CONFIGS


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_config_loads_by_name_and_path(name):
    by_name = load_config(name)
    by_path = load_config(str(resolve_config_path(name)))
    assert by_name.to_dict() == by_path.to_dict()
    assert by_name.name == name


def test_regularised_dims_follow_the_paper_and_ar_vae():
    dims = lambda name: {k: v.dim for k, v in load_config(name).regularization.items()}  # noqa: E731
    assert dims("base") == {} and dims("beta_vae") == {}
    assert dims("rhy") == {"rhythmic_complexity": 0}
    assert dims("pr") == {"pitch_range": 2}
    assert dims("rhy_pr") == {"rhythmic_complexity": 0, "pitch_range": 2}
    assert dims("all4") == {"rhythmic_complexity": 0, "pitch_range": 1, "note_density": 2, "contour": 3}
    spec = load_config("rhy_pr").regularization.rhythmic_complexity
    assert (spec.loss, spec.delta, spec.gamma, spec.target) == ("l1", 10.0, 1.0, "sign")
    assert load_config("rhy_pr_distance").regularization.pitch_range.target == "distance"
    assert load_config("rhy_pr").regularization.pitch_range.consistency == 0.0  # the paper's model has none
    consistent = load_config("rhy_pr_consistency").regularization
    assert consistent.pitch_range.consistency > 0 and consistent.rhythmic_complexity.target == "sign"
    # the monotone term is on only where it was measured to help: pitch range in the four-attribute model
    monotone = {name: {k: v.monotone for k, v in load_config(name).regularization.items()}
                for name in ("rhy_pr", "recommended", "all4_control")}
    assert set(monotone["rhy_pr"].values()) == set(monotone["recommended"].values()) == {0.0}
    assert monotone["all4_control"] == {"rhythmic_complexity": 0.0, "pitch_range": 30.0, "note_density": 0.0,
                                        "contour": 0.0}
    paper = load_config("paper").model
    assert (paper.z_dim, paper.enc_hidden, paper.dec_hidden, paper.enc_layers, paper.dec_layers) == (256, 512, 512, 2, 2)
    assert load_config("beta_vae").train.beta > load_config("base").train.beta


def test_paper_size_has_about_the_papers_parameter_count():
    from music_attr_vae.model.vae import build_model

    params = build_model(load_config("paper")).count_params()
    # The PyTorch original has 17.7M: the same GRUs (~12.6M) plus larger dense adapters.
    assert 12e6 < params < 20e6, params


def test_overrides_dotted_and_nested():
    config = load_config("rhy_pr", {"train.epochs": 3, "regularization": {"pitch_range": {"gamma": 2.0}}})
    assert config.train.epochs == 3 and config.regularization.pitch_range.gamma == 2.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.beta": -0.1}, r"'train.beta' = -0.1 must be a number >= 0"),
        ({"train.batch_size": 0}, r"'train.batch_size' = 0 must be an integer >= 1"),
        ({"train.lr_schedule": "step"}, r"'train.lr_schedule' = 'step' must be one of"),
        ({"model.dropout": 1.0}, r"'model.dropout' = 1.0 must be a number in \[0, 1\)"),
        ({"regularization.pitch_range.dim": 32}, r"pitch_range.dim=32 must be an integer in \[0, z_dim=32\)"),
        ({"regularization.pitch_range.loss": "l2"}, r"pitch_range.loss='l2' must be one of \('l1', 'mse'\)"),
        ({"train.epocs": 3}, r"unknown config field 'train.epocs'"),
        ({"train.epochs": "three"}, r"config field 'train.epochs'"),
    ],
)
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("rhy_pr", overrides)


def test_unknown_attribute_lists_the_known_ones():
    import ml_collections

    from music_attr_vae.configs_loader import validate_config

    config = load_config("base")
    config.regularization = ml_collections.ConfigDict({"swing": {"dim": 0}})
    with pytest.raises(ValueError, match="unknown attribute 'swing'; known attributes: rhythmic_complexity"):
        validate_config(config)


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="known configs: .*rhy_pr"):
        load_config("rhy_pr_typo")


def test_a_workdir_config_from_an_older_version_gets_the_common_defaults():
    import json

    from music_attr_vae.configs_loader import from_dict, to_dict
    from music_attr_vae.model.vae import model_kwargs

    stored = json.loads(json.dumps(to_dict(load_config("rhy_pr", {"model.dropout": 0.25}))))
    del stored["train"]["token_dropout"], stored["model"]["rnn_chains"]  # fields added in later versions
    config = from_dict(stored)
    assert config.train.token_dropout == load_config("common").train.token_dropout == 0.0
    assert config.model.rnn_chains == 0 and config.model.dropout == 0.25  # stored values win
    assert dict(config.regularization.pitch_range) == stored["regularization"]["pitch_range"]
    assert model_kwargs(config)["token_dropout"] == 0.0
    assert to_dict(from_dict(to_dict(config))) == to_dict(config)


def test_a_workdir_config_loads_without_a_configs_folder(tmp_path, monkeypatch):
    from music_attr_vae.configs_loader import from_dict, to_dict

    stored = to_dict(load_config("rhy_pr"))
    monkeypatch.setenv("MUSIC_ATTR_VAE_CONFIGS", str(tmp_path / "nowhere"))
    assert to_dict(from_dict(stored)) == stored


def test_auto_rnn_chains_split_the_batch_only_where_xla_compiles_on_a_cpu(monkeypatch):
    import os

    from music_attr_vae.model import vae

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert vae.resolve_rnn_chains(0, xla=True) == 2
    assert vae.resolve_rnn_chains(0, xla=False) == 1
    assert vae.resolve_rnn_chains(3, xla=False) == 3  # an explicit value always wins
    float32_xla = load_config("rhy_pr", {"model.matmul_dtype": "float32", "train.jit_compile": True})
    assert vae.model_kwargs(float32_xla)["rnn_chains"] == 2
    float32_auto = load_config("rhy_pr", {"model.matmul_dtype": "float32"})  # 'auto': no XLA on a CPU
    assert vae.model_kwargs(float32_auto)["rnn_chains"] == 1
    no_xla = load_config("rhy_pr", {"model.matmul_dtype": "float32", "train.jit_compile": False})
    assert vae.model_kwargs(no_xla)["rnn_chains"] == 1
    bf16 = load_config("rhy_pr", {"model.matmul_dtype": "bfloat16"})
    assert vae.model_kwargs(bf16)["rnn_chains"] == 1


def test_jit_compile_auto_means_no_xla_on_a_cpu_and_true_forces_it_for_float32_products():
    from music_attr_vae.model import vae

    assert load_config("rhy_pr").train.jit_compile == "auto"
    assert not vae.use_xla(load_config("rhy_pr", {"model.matmul_dtype": "float32"}))
    assert vae.use_xla(load_config("rhy_pr", {"model.matmul_dtype": "float32", "train.jit_compile": True}))
    assert not vae.use_xla(load_config("rhy_pr", {"model.matmul_dtype": "bfloat16", "train.jit_compile": True}))
    assert not vae.use_xla(load_config("rhy_pr", {"model.matmul_dtype": "float32", "train.jit_compile": False}))
    with pytest.raises(ValueError, match="train.jit_compile"):
        load_config("rhy_pr", {"train.jit_compile": "yes"})
