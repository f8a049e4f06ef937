"""PR: pitch range regularised on latent dim 2 (Pati & Lerch 2019)."""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "pr"
    config.regularization = common.regularization({"pitch_range": 2})
    return config
