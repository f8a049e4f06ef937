"""RHY-PR with the 'distance' target: dims 0 and 2 become linear in their attributes.

The optimum of the distance target is z_r = scale * a + c (see
music_attr_vae/model/regularization.py), which makes editing an attribute to
a given value an affine map instead of a fitted monotone curve.
"""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "rhy_pr_distance"
    config.regularization = common.regularization(dict(common.PAPER_DIMS), target="distance")
    return config
