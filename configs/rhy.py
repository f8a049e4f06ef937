"""RHY: rhythmic complexity regularised on latent dim 0 (Pati & Lerch 2019)."""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "rhy"
    config.regularization = common.regularization({"rhythmic_complexity": 0})
    return config
