"""Shared defaults of every experiment config, and helpers to build the variants.

A config file is a Python file with ``get_config()`` returning an
``ml_collections.ConfigDict``; ``music-attr-vae train --config=configs/X.py``
loads it and any field can be overridden from the command line, e.g.
``--config.train.epochs=3`` or ``--config.regularization.pitch_range.gamma=2``.

Field reference:

``name``                         experiment name (written to the workdir, the SavedModel metadata).
``model.z_dim``                  latent size.
``model.embed_dim``              token embedding size (encoder and decoder).
``model.enc_hidden/enc_layers``  units per direction / stacked bidirectional GRUs of the encoder.
``model.dec_hidden/dec_layers``  units / stacked GRUs of the beat and tick GRUs of the decoder.
``model.dropout``                dropout on GRU inputs (training only).
``model.mask_hold_at_start``     forbid HOLD on tick 0 (the data never starts a measure with HOLD).
``model.rnn_chains``             independent recurrences per GRU (0 = auto: 1 per CPU core where XLA
                                 compiles on a CPU, else 1).
``model.unroll``                 unroll the GRU loops (fastest steps) or use tf.scan (fastest compilation).
``model.matmul_dtype``           'auto', 'float32' or 'bfloat16' operands of the GRU products in training
                                 (float32 weights and gates either way; see music_attr_vae/model/gru.py;
                                 'auto' = bfloat16 on CPUs with AMX/AVX512-BF16 units, else float32).
``model.inference_matmul_dtype`` the same for encode/decode and the SavedModel.
``regularization.<attribute>``   {dim, gamma, delta, loss: l1|mse, target: sign|distance, scale,
                                 consistency} (see music_attr_vae/model/regularization.py); empty =
                                 plain VAE.  ``consistency`` > 0 adds the decoder consistency term
                                 (music_attr_vae/model/vae.py, MeasureVAE.consistency) with that weight.
``train.batch_size``             global batch (split across replicas).
``train.epochs``                 passes over the training split.
``train.steps_per_epoch``        0 = the whole split; N = at most N batches per epoch.
``train.learning_rate``          Adam's peak learning rate.
``train.lr_schedule``            'constant' or 'cosine' (decays to lr_final_fraction * lr over the run).
``train.lr_warmup_steps``        linear warm-up steps.
``train.weight_decay``           AdamW decoupled weight decay (0 = plain Adam).
``train.token_dropout``          probability that a teacher-forced previous token is replaced by START
                                 (word dropout: the decoder must read z instead of copying its inputs).
``train.clipnorm``               global gradient-norm clip (0 = off).
``train.beta``                   KL weight (our recon is a per-token mean: beta = 1/24 is the plain ELBO).
``train.beta_anneal_steps``      linear warm-up of beta from 0 (0 = constant).
``train.gamma_ramp_steps``       linear warm-up of every gamma from 0 (0 = constant).
``train.gamma_ramp_start_steps`` steps with every gamma at 0 before that warm-up starts.
``train.consistency_batch``      rows of each batch the consistency term decodes (soft free running).
``train.seed``                   initialisation, data order and noise.
``train.checkpoint_every_steps`` also checkpoint every N steps (0 = only at epoch ends).
``train.keep_checkpoints``       checkpoints kept on disk.
``train.log_every_steps``        TensorBoard training-scalar interval.
``train.jit_compile``            'auto', true or false: XLA-compile the train step.  'auto' = on a GPU,
                                 not on a CPU (TensorFlow's own kernels ran the step as fast or faster and
                                 compiled it 3-5x sooner on every CPU measured, BUILD_NOTES "Performance"); true = also on a
                                 CPU with float32 products (bfloat16 ones run faster in oneDNN's kernels
                                 than in XLA's); see model/vae.py, use_xla.
``train.eval_free_running``      validation also decodes free-running (the paper's accuracy).
``train.max_minutes``            stop (checkpoint, export) after this much training time (0 = no limit).
``train.inject_nan_at_step``     testing aid: make the loss of that step NaN (0 = off).
``data.source``                  default --source ('' = folk_rnn download).
``data.max_shift``               transpositions +-max_shift semitones when preparing on the fly.
``data.seed``                    split seed when preparing on the fly.
``data.validation_size``         at most this many validation measures per evaluation (0 = all).
"""

from __future__ import annotations

import ml_collections

from music_attr_vae.model.regularization import default_entry

# The paper regularises rhythmic complexity on dim 0 and pitch range on dim 2.
PAPER_DIMS = {"rhythmic_complexity": 0, "pitch_range": 2}
# AR-VAE style: the four attributes on dims 0-3, in ATTRIBUTE_NAMES order.
ALL4_DIMS = {"rhythmic_complexity": 0, "pitch_range": 1, "note_density": 2, "contour": 3}


def get_config() -> ml_collections.ConfigDict:
    """The small default model (base VAE: no regularization)."""
    config = ml_collections.ConfigDict()
    config.name = "base"

    config.model = ml_collections.ConfigDict()
    config.model.z_dim = 32
    config.model.embed_dim = 16
    config.model.enc_hidden = 128
    config.model.enc_layers = 2
    config.model.dec_hidden = 128
    config.model.dec_layers = 2
    config.model.dropout = 0.0
    config.model.mask_hold_at_start = True
    config.model.rnn_chains = 0
    config.model.unroll = True
    # 'auto': bfloat16 products where the CPU has bfloat16 units (~20% faster steps,
    # the same loss curve), else float32; float32 makes the small decoder fastest (XLA)
    config.model.matmul_dtype = "auto"
    config.model.inference_matmul_dtype = "float32"

    config.regularization = ml_collections.ConfigDict()

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 256
    config.train.epochs = 12
    config.train.steps_per_epoch = 0
    config.train.learning_rate = 1e-3
    config.train.lr_schedule = "cosine"
    config.train.lr_final_fraction = 0.05
    config.train.lr_warmup_steps = 0
    config.train.weight_decay = 0.0
    config.train.token_dropout = 0.0
    config.train.clipnorm = 0.0
    config.train.beta = 0.001
    config.train.beta_anneal_steps = 0
    # regularised configs: gamma = 0 for the first 1,000 steps (~1.4 Nottingham epochs at
    # batch 256), then a linear ramp to gamma over 700 steps.  With gamma on from step 0 the
    # decoder sat in a predict-HOLD minimum for 2-3 epochs (BUILD_NOTES, "Results").
    config.train.gamma_ramp_steps = 700
    config.train.gamma_ramp_start_steps = 1000
    config.train.consistency_batch = 64
    config.train.seed = 0
    config.train.checkpoint_every_steps = 500
    config.train.keep_checkpoints = 3
    config.train.log_every_steps = 50
    # 'auto' or a bool: a reference of type object takes either (also from --config.train.jit_compile=)
    config.train.jit_compile = ml_collections.FieldReference("auto", field_type=object)
    config.train.eval_free_running = True
    config.train.max_minutes = 0.0
    config.train.inject_nan_at_step = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = ""
    config.data.max_shift = 12
    config.data.seed = 0
    config.data.validation_size = 0
    return config


def regularization(dims: dict, **overrides) -> ml_collections.ConfigDict:
    """Regularization entries {attribute: dim} with the defaults of the authors' code.

    Defaults (``regularization.default_entry``): L1 loss, delta=10, gamma=1, target 'sign' (the paper's order
    target), the attribute's default ``scale`` (used by target 'distance')
    and consistency 0 (off); every field is present so it can be overridden
    from the command line.  Keyword arguments apply to every entry.
    """
    reg = ml_collections.ConfigDict()
    for name, dim in dims.items():
        entry = dict(default_entry(name), dim=dim)
        entry.update(overrides)
        reg[name] = ml_collections.ConfigDict(entry)
    return reg
