"""The FLOP counter behind ``bench/bench_roofline.py``: exact on known graphs and on the model's decoder."""

import importlib.util
import os

import pytest
import tensorflow as tf

_PATH = os.path.join(os.path.dirname(__file__), "..", "bench", "bench_roofline.py")
_spec = importlib.util.spec_from_file_location("bench_roofline", _PATH)
roofline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(roofline)


def _graph(fn, *specs):
    return tf.function(fn, autograph=False).get_concrete_function(*specs).graph


def test_products_are_counted_with_their_transposes_broadcasts_and_branches():
    a = tf.TensorSpec([3, 4], tf.float32)
    b = tf.TensorSpec([4, 5], tf.float32)
    stacked = tf.TensorSpec([2, 3, 4], tf.float32)
    flag = tf.TensorSpec([], tf.bool)

    def fn(a, b, stacked, flag):
        plain = tf.matmul(a, b)                                  # 2*3*4*5 = 120
        transposed = tf.matmul(tf.transpose(a), b, transpose_a=True)  # (4, 3) read as (3, 4): 120
        batched = tf.matmul(stacked, b)                          # broadcast over 2: 240
        branch = tf.cond(flag, lambda: tf.matmul(b, tf.transpose(b)),  # 2*4*5*4 = 160
                         lambda: tf.zeros([4, 4]))
        return plain, transposed, batched, branch

    counted = roofline.product_flops(_graph(fn, a, b, stacked, flag))
    assert counted["products"] == 4
    assert counted["loops"] == 0
    assert counted["flops"] == 120 + 120 + 240 + 160


def test_a_loop_is_reported_not_counted():
    def fn(x):
        return tf.scan(lambda h, row: tf.matmul(h, tf.ones([4, 4])), x, initializer=tf.zeros([1, 4]))

    counted = roofline.product_flops(_graph(fn, tf.TensorSpec([6, 1, 4], tf.float32)))
    assert counted["loops"] == 1 and counted["flops"] == 0


def test_only_what_the_outputs_need_is_counted():
    def fn(a, b):
        tf.matmul(b, tf.transpose(b))  # computed by nothing that is returned
        return tf.matmul(a, b)

    counted = roofline.product_flops(_graph(fn, tf.TensorSpec([3, 4], tf.float32), tf.TensorSpec([4, 5], tf.float32)))
    assert (counted["products"], counted["flops"]) == (1, 120)


def test_unknown_shapes_are_refused():
    with pytest.raises(ValueError, match="not static"):
        roofline.product_flops(_graph(lambda a: tf.matmul(a, tf.ones([4, 2])), tf.TensorSpec([None, 4], tf.float32)))


def _decode_flops_per_measure(d, e, h, v, beats=4, ticks=6):
    """The two-layer hierarchical decoder's products for one measure, written out from its design."""
    square = 2 * h * 3 * h                   # one (1, H) @ (H, 3H) product
    beat_level = 2 * d * 2 * h               # beat_init: z -> both layers' initial states
    beat_level += 2 * d * 3 * h              # layer 0's input is z at every beat: projected once
    beat_level += beats * square             # layer 0's recurrence
    beat_level += beats * 2 * square         # layer 1: input projection and recurrence
    per_beat = square + 2 * h * 2 * h        # the beat vector through the tick GRU's kernel; tick_init
    per_beat += ticks * 3 * square           # per tick: layer 0's recurrence, layer 1's input and recurrence
    per_beat += ticks * 2 * h * v            # token logits
    feedback = beats * ticks * 2 * (v + 1) * 3 * h  # START and the 23 fed-back tokens: one-hot @ table rows
    return beat_level + beats * per_beat + feedback


def test_the_decoder_costs_what_its_design_says():
    from music_attr_vae.data.codec import CODEC

    batch = 4
    counted = roofline.model_flops("quick", batch=batch, overrides={"model.dec_layers": 2})
    d, e, h, v = 8, 8, 16, CODEC.vocab_size
    table = 2 * (v + 1) * e * 3 * h          # every token's embedding through the tick kernel, once per call
    assert counted["decode_measure"]["flops_per_call"] == batch * _decode_flops_per_measure(d, e, h, v) + table
    # training does the forward pass and more than it again backwards
    assert counted["train_example"]["flops"] > 3 * counted["decode_measure"]["flops"] // 2
    assert counted["traverse"]["flops_per_call"] > 8 * _decode_flops_per_measure(d, e, h, v)
