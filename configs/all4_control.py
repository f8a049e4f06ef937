"""Four attributes on dims 0-3 (AR-VAE style), each with the distance target and the decoder consistency term.

The distance target makes each dim linear in its attribute (interpretability);
the consistency term trains the decoder to follow each dim when it moves alone
(decoded-traversal monotonicity), contour included (its soft value is
``model/soft_attributes.soft_contour``).  See BUILD_NOTES.md "Results".
"""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "all4_control"
    config.regularization = common.regularization(dict(common.ALL4_DIMS), target="distance", consistency=1.0)
    config.train.epochs = 8
    return config
