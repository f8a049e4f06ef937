"""Base: the small hierarchical VAE with no attribute regularization (the paper's baseline)."""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "base"
    return config
