"""RHY-PR plus the decoder consistency term: the decoder must follow dims 0 and 2 when they move alone.

The paper's loss (L1, delta=10, sign target) orders dims 0 and 2 by their
attributes in the encoder; the consistency term (``MeasureVAE.consistency``)
also trains the decoder so that a measure decoded with dim r taken from
another example has that example's attribute.  This is this project's
addition for traversals and slider edits; see BUILD_NOTES.md "Results".
"""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "rhy_pr_consistency"
    config.regularization = common.regularization(dict(common.PAPER_DIMS), consistency=1.0)
    return config
