"""RHY-PR: rhythmic complexity on dim 0 and pitch range on dim 2 (Pati & Lerch 2019).

Regularization as in the authors' code: L1, delta=10, gamma=1, sign target.
"""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "rhy_pr"
    config.regularization = common.regularization(dict(common.PAPER_DIMS))
    return config
