"""Under MirroredStrategy the update is the mean of the replicas' gradients, pairs formed per replica.

Runs in a subprocess: the two logical CPU devices must be configured before
TensorFlow initialises, which the test process has already done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from music_attr_vae.configs_loader import load_config
    from music_attr_vae.data import loader
    from music_attr_vae.model import vae as vae_module

    arrays = loader.load_arrays(sys.argv[1], "train")
    tokens, attributes = arrays["tokens"][:32], arrays["attributes"][:32]
    config = load_config("quick", {"train.jit_compile": True})

    def fresh():
        keras.utils.set_random_seed(0)
        return vae_module.build_model(config)

    # Mirrored: 2 replicas, each gets 16 measures; one SGD step of lr 1 through Keras' fit.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = fresh()
        model.jit_inner = True
        model.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [w.copy() for w in model.get_weights()]
    ds = tf.data.Dataset.from_tensors((tokens, attributes))
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    delta = [a - b for a, b in zip(model.get_weights(), before)]

    # Reference on one device: each half's gradient with that replica's noise, averaged.
    ref = fresh()
    ref.compile(optimizer=keras.optimizers.SGD(1.0))
    ref.optimizer.build(ref.trainable_variables)
    grads = []
    which = tf.Variable(0, dtype=tf.int32)
    vae_module._replica_id = lambda: which.read_value()  # the noise seed of replica `which`
    fn = tf.function(ref._loss_and_grads, jit_compile=True, autograph=False)
    for replica in (0, 1):
        which.assign(replica)
        half = slice(16 * replica, 16 * (replica + 1))
        g, _ = fn(tf.constant(tokens[half]), tf.constant(attributes[half]), tf.constant(0, tf.int64))
        grads.append([tf.convert_to_tensor(x).numpy() for x in g])
    expected = {v.path: -(g0 + g1) / 2 for v, g0, g1 in zip(ref.trainable_variables, *grads)}
    got = {v.path: d for v, d in zip(model.weights, delta) if v.trainable}
    worst = max(float(np.max(np.abs(got[p] - expected[p])) / (np.max(np.abs(expected[p])) + 1e-6)) for p in expected)
    # Pairs over the global batch (the wrong thing) would give a different regularization gradient:
    z = ref.encode(tokens)[0]
    whole = float(ref.attribute_reg(z, tf.constant(attributes))[0])
    halves = [float(ref.attribute_reg(z[h], tf.constant(attributes[h]))[0]) for h in (slice(0, 16), slice(16, 32))]
    print(json.dumps({"worst_relative_error": worst, "replicas": strategy.num_replicas_in_sync,
                      "reg_whole": whole, "reg_halves_mean": sum(halves) / 2}))
    """
)


@pytest.mark.slow
def test_mirrored_update_is_the_mean_of_per_replica_gradients(tmp_path, prepared_small):
    script = tmp_path / "mirrored_check.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run(
        [sys.executable, str(script), str(prepared_small)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["worst_relative_error"] < 1e-3, result
    assert abs(result["reg_whole"] - result["reg_halves_mean"]) > 1e-4  # the check above can tell them apart
