"""QUICK: a tiny RHY-PR model for tests and smoke runs (trains in seconds on a CPU)."""

from music_attr_vae.configs_loader import sibling_module

common = sibling_module(__file__, "common")


def get_config():
    config = common.get_config()
    config.name = "quick"
    config.model.z_dim = 8
    config.model.embed_dim = 8
    config.model.enc_hidden = 16
    config.model.dec_hidden = 16
    config.model.enc_layers = 1
    config.model.dec_layers = 1
    config.model.rnn_chains = 1
    config.model.unroll = False  # tf.scan loops: the graph builds in a fraction of the time
    config.model.matmul_dtype = "float32"
    config.regularization = common.regularization(dict(common.PAPER_DIMS))
    config.train.batch_size = 32
    config.train.epochs = 2
    config.train.steps_per_epoch = 12
    config.train.checkpoint_every_steps = 5
    config.train.log_every_steps = 5
    config.train.lr_schedule = "constant"
    config.train.gamma_ramp_steps = 0  # regularise from the first of its 24 steps
    config.train.gamma_ramp_start_steps = 0
    config.train.jit_compile = False  # XLA compilation would cost more than the whole run
    config.data.max_shift = 2
    config.data.validation_size = 256
    return config
