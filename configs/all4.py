"""ALL4: rhythmic complexity, pitch range, note density and contour on dims 0-3 (as in AR-VAE)."""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "all4"
    config.regularization = common.regularization(dict(common.ALL4_DIMS))
    return config
