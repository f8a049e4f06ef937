"""Where the seconds before the first training step and the first served answer go.

Usage::

    python bench/bench_startup.py                          # recommended and paper
    python bench/bench_startup.py --configs=rhy_pr --json=runs/startup.json

For each config, in this process (TensorFlow imported once, before timing):

* **train step graph:** operations in the traced train step (forward,
  consistency, gradients) and the seconds to trace it; then the seconds of the
  first call (graph optimisation and the step itself) and of a later step;
* **SavedModel:** functions and nodes in the export of an untrained model,
  seconds of ``tf.saved_model.load``, of the first ``traverse`` call (XLA
  compiles the decoder here unless the persistent cache has it; the cache is
  off in this benchmark) and of a later call.

The graph sizes do not depend on the machine; the seconds do (run it on an
idle machine; the 1-minute load is printed beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def _seconds(fn):
    start = time.perf_counter()
    out = fn()
    return round(time.perf_counter() - start, 2), out


def train_step_figures(config_name: str) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from music_attr_vae.configs_loader import load_config
    from music_attr_vae.model.vae import build_model
    from music_attr_vae.training import build_optimizer

    config = load_config(config_name)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    model.compile(optimizer=build_optimizer(config, 1000), jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    batch = config.train.batch_size
    specs = (tf.TensorSpec([batch, 24], tf.int32), tf.TensorSpec([batch, 4], tf.float32), tf.TensorSpec([], tf.int64))
    traced = tf.function(model._loss_and_grads, autograph=False)
    trace_s, concrete = _seconds(lambda: traced.get_concrete_function(*specs))
    rng = np.random.default_rng(0)
    tokens = tf.constant(rng.integers(0, 30, (batch, 24)), tf.int32)
    attrs = tf.constant(rng.random((batch, 4)), tf.float32)
    step = tf.constant(0, tf.int64)
    first_s, _ = _seconds(lambda: [g.numpy() for g in concrete(tokens, attrs, step)[0] if g is not None])
    later_s, _ = _seconds(lambda: [g.numpy() for g in concrete(tokens, attrs, step)[0] if g is not None])
    return {"train_step_ops": len(concrete.graph.get_operations()), "trace_s": trace_s,
            "first_call_s": first_s, "later_call_s": later_s}


def saved_model_figures(config_name: str) -> dict:
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from bench_serving import export_untrained

    with tempfile.TemporaryDirectory() as tmp:
        path = export_untrained(config_name, tmp)
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        library = proto.meta_graphs[0].graph_def.library.function
        load_s, module = _seconds(lambda: tf.saved_model.load(path))
        meta = json.loads(module.metadata()["json"].numpy().decode("utf-8"))
        name = next(iter(meta["attribute_maps"]), "0")
        tokens = tf.constant(np.full((1, 24), 31, np.int32))
        tokens = tf.tensor_scatter_nd_update(tokens, [[0, 0]], [12])

        def call():
            return module.traverse(tokens, tf.constant(name), tf.linspace(-1.0, 1.0, 8), tf.constant(0.0),
                                   tf.constant(0, tf.int32))["tokens"].numpy()

        first_s, _ = _seconds(call)
        later_s, _ = _seconds(call)
        return {"saved_model_functions": len(library), "saved_model_nodes": sum(len(f.node_def) for f in library),
                "saved_model_bytes": os.path.getsize(os.path.join(path, "saved_model.pb")),
                "load_s": load_s, "first_traverse_s": first_s, "later_traverse_s": later_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="recommended,paper", help="comma-separated config names")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    os.environ["MUSIC_ATTR_VAE_XLA_CACHE"] = "off"
    import tensorflow as tf  # noqa: F401  (imported before any timing)

    from music_attr_vae import fileio

    results = []
    for name in [c for c in args.configs.split(",") if c]:
        row = {"config": name, "load_average_1min": round(os.getloadavg()[0], 2)}
        row.update(train_step_figures(name))
        row.update(saved_model_figures(name))
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json:
        fileio.write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
