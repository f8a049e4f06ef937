"""PAPER: the paper-size network (z=256, GRUs of 512, 2 layers) with the RHY-PR regularization.

13.6M parameters (the PyTorch original's 17.7M include larger dense adapters;
the GRUs, where the compute is, are the same sizes).  The GRU products use
bfloat16 operands (float32 weights, states and gates): at this size the step
is bound by matrix products, which oneDNN runs ~1.7x faster in bfloat16 on
AMX / AVX512-BF16 CPUs, outside XLA (XLA's CPU bfloat16 products are not
faster).  Override with --config.model.matmul_dtype=float32
--config.train.jit_compile=true for plain float32.
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
    config.model.matmul_dtype = "bfloat16"
    config.train.jit_compile = False
    config.regularization = common.regularization(dict(common.PAPER_DIMS))
    return config
