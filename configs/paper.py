"""PAPER: the paper-size network (z=256, GRUs of 512, 2 layers) with the RHY-PR regularization.

13.6M parameters (the PyTorch original's 17.7M include larger dense adapters;
the GRUs, where the compute is, are the same sizes).  At this size training
and decoding are bound by matrix products, so both use bfloat16 operands
(float32 weights, states and gates) where the CPU has AMX / AVX512-BF16
units, on which oneDNN runs them ~1.7x faster than float32.  --config.model.matmul_dtype=float32
--config.model.inference_matmul_dtype=float32 gives plain float32.
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
    config.model.inference_matmul_dtype = "auto"
    config.regularization = common.regularization(dict(common.PAPER_DIMS))
    return config
