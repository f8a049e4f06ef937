"""The fused Adam/AdamW: the same updates as Keras', one kernel per variable, Keras' variables."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.optimizers import FusedAdam, FusedAdamW


def _run(optimizer, steps=5, seed=0):
    """Train a tiny regression with ``optimizer``; returns the weights after ``steps`` steps."""
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(32, 6)).astype(np.float32))
    y = tf.constant(rng.normal(size=(32, 3)).astype(np.float32))
    w = keras.Variable(rng.normal(size=(6, 3)).astype(np.float32), name="w")
    b = keras.Variable(np.zeros(3, np.float32), name="b")
    optimizer.build([w, b])

    @tf.function(autograph=False)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + b - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))

    for _ in range(steps):
        step()
    return [np.array(w.numpy()), np.array(b.numpy())], optimizer


@pytest.mark.parametrize("fused,stock,kwargs", [
    (FusedAdam, keras.optimizers.Adam, {}),
    (FusedAdam, keras.optimizers.Adam, {"learning_rate": 0.05, "beta_1": 0.8, "epsilon": 1e-4}),
    (FusedAdamW, keras.optimizers.AdamW, {"learning_rate": 0.01, "weight_decay": 0.1}),
])
def test_same_updates_as_keras(fused, stock, kwargs):
    got, opt = _run(fused(**kwargs))
    want, _ = _run(stock(**kwargs))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert int(opt.iterations.numpy()) == 5
    start, _ = _run(fused(**kwargs), steps=0)
    assert np.abs(got[0] - start[0]).max() > 1e-3  # the weights really moved


def test_learning_rate_schedule_is_followed():
    schedule = keras.optimizers.schedules.CosineDecay(0.05, decay_steps=4, alpha=0.1)
    got, _ = _run(FusedAdam(learning_rate=schedule), steps=6)
    want, _ = _run(keras.optimizers.Adam(learning_rate=schedule), steps=6)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_one_fused_kernel_per_variable_in_the_step_graph():
    rng = np.random.default_rng(0)
    w = keras.Variable(rng.normal(size=(6, 3)).astype(np.float32))
    b = keras.Variable(np.zeros(3, np.float32))
    graphs = {}
    for name, opt in (("fused", FusedAdam()), ("keras", keras.optimizers.Adam())):
        opt.build([w, b])

        @tf.function(autograph=False)
        def apply(gw, gb, opt=opt):
            opt.apply_gradients([(gw, w), (gb, b)])

        graph = apply.get_concrete_function(tf.TensorSpec([6, 3]), tf.TensorSpec([3])).graph
        graphs[name] = [op.type for op in graph.get_operations()]
    assert graphs["fused"].count("ResourceApplyAdam") == 2
    assert "ResourceApplyAdam" not in graphs["keras"]
    assert len(graphs["fused"]) < len(graphs["keras"]) / 2


def test_checkpoint_holds_keras_variables_and_restores_into_stock_adam(tmp_path):
    got, opt = _run(FusedAdam(learning_rate=0.01))
    ckpt = tf.train.Checkpoint(optimizer=opt)
    path = ckpt.save(str(tmp_path / "ckpt"))
    stock = keras.optimizers.Adam(learning_rate=0.01)
    w = keras.Variable(np.zeros((6, 3), np.float32), name="w")
    b = keras.Variable(np.zeros(3, np.float32), name="b")
    stock.build([w, b])
    tf.train.Checkpoint(optimizer=stock).restore(path).assert_existing_objects_matched()
    names = [v.path.split("/")[-1] for v in opt.variables]
    assert names == [v.path.split("/")[-1] for v in stock.variables]
    assert {"iteration", "w_momentum", "w_velocity", "b_momentum", "b_velocity"} <= set(names)
    for mine, theirs in zip(opt.variables, stock.variables):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_under_a_strategy_the_update_is_keras_own():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        opt = FusedAdam(learning_rate=0.01)
        w = keras.Variable(np.ones((2, 2), np.float32))
        opt.build([w])

    @tf.function(autograph=False)
    def apply():
        strategy.run(lambda: opt.apply_gradients([(tf.ones((2, 2)), w)]))

    ops = [op.type for op in apply.get_concrete_function().graph.get_operations()]
    assert "ResourceApplyAdam" not in ops
    apply()
    assert np.all(np.asarray(w) < 1.0)
