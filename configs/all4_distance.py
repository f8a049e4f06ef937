"""ALL4 with the 'distance' target: each of dims 0-3 linear in its attribute."""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "all4_distance"
    config.regularization = common.regularization(dict(common.ALL4_DIMS), target="distance")
    return config
