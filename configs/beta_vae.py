"""β-VAE baseline: no attribute regularization, a heavier KL weight annealed in.

Our reconstruction term is a per-token mean, so beta = 1/24 ~= 0.042 is the
plain ELBO; beta = 0.2 is a β-VAE with β ~= 4.8 in ELBO units (Higgins et al.
use β > 1 to encourage disentangled factors).
"""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "beta_vae"
    config.train.beta = 0.2
    config.train.beta_anneal_steps = 5000
    return config
