"""PAPER: the paper-size network (z=256, GRUs of 512, 2 layers) with the RHY-PR regularization.

About 16M parameters; far slower than the small default on a CPU (see BUILD_NOTES.md).
"""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "paper"
    config.model.z_dim = 256
    config.model.embed_dim = 10
    config.model.enc_hidden = 512
    config.model.dec_hidden = 512
    config.model.enc_layers = 2
    config.model.dec_layers = 2
    config.regularization = common.regularization(dict(common.PAPER_DIMS))
    return config
