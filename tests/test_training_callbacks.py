"""Training callbacks on a tiny Keras model: NaN guard, fault injection, step checkpoints, time budget, scalars."""

from __future__ import annotations

import glob
import math

import keras
import numpy as np
import tensorflow as tf

from music_attr_vae import training_callbacks as cb


def _model_and_data(n=64, batch=8):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    return model, tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(batch)


def test_injected_nan_is_caught_at_its_step_and_no_checkpoint_follows():
    model, ds = _model_and_data()
    guard, saved = cb.NanGuard(), []
    model.fit(ds, epochs=1, verbose=0,
              callbacks=[cb.InjectNan(5), guard, cb.StepCheckpoint(lambda n: saved.append(n), 2, guard)])
    assert guard.bad is not None and guard.bad[0] == 5 and math.isnan(guard.bad[1])
    assert saved == [2, 4]  # every 2 steps until the bad one, none after
    assert int(model.optimizer.iterations.numpy()) == 5  # training stopped at the bad step


def test_time_budget_stops_and_adds_up_over_fits():
    model, ds = _model_and_data(n=800)
    budget = cb.TimeBudget(1e-9)
    model.fit(ds, epochs=1, verbose=0, callbacks=[budget])
    assert int(model.optimizer.iterations.numpy()) == 1 and budget.exhausted
    unlimited = cb.TimeBudget(0.0, already=5.0)
    model.fit(ds, epochs=1, verbose=0, callbacks=[unlimited])
    assert not unlimited.exhausted and unlimited.used() > 5.0
    assert int(model.optimizer.iterations.numpy()) == 1 + 100


def test_scalar_logger_writes_interval_means(tmp_path):
    model, ds = _model_and_data()
    writer = tf.summary.create_file_writer(str(tmp_path))
    model.fit(ds, epochs=1, verbose=0, callbacks=[cb.ScalarLogger(writer, 4, 8)])
    writer.flush()
    steps = {}
    for path in glob.glob(str(tmp_path / "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    assert sorted(steps["loss"]) == [4, 8] and sorted(steps["examples_per_second"]) == [4, 8]
