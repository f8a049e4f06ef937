"""The ceilings this machine sets: float32 product throughput, each model's FLOPs, and the best ratio they allow.

Usage::

    python bench/bench_roofline.py [--table_json=PATH] [--original_python=PY --original_dir=DIR] [--json=PATH]

A throughput figure can only be as high as the machine's fastest matrix
product allows: items/s <= peak FLOP/s / FLOPs per item.  This script measures
the three things that bound issue 13's figures, so that a target which the
hardware cannot reach is shown to be so, on whatever machine it runs:

* **Peak product throughput** (GFLOP/s): float32 ``matmul`` at the shapes the
  model multiplies (and a large square one), in TensorFlow's plain kernels and
  under XLA, each timed as a chain of dependent products inside one call (so
  no Python or dispatch cost is counted).  The fastest is the machine's peak.
* **FLOPs per item**, counted from the traced graphs of this package's model
  (every ``MatMul``/``BatchMatMul`` in the graph, ``2*m*k*n`` each, so
  elementwise arithmetic is left out): one training example (forward, the
  hand-written backward and the attribute loss, at batch 256), one decoded
  measure (free-running greedy decode at batch 256) and one traverse
  (encode 1 measure, decode 8).  With ``--original_python`` and
  ``--original_dir``, the PyTorch original's are counted too
  (``bench_original.py --count_flops``: ``torch.utils.flop_counter``).
* **The traverse's floor**: a traverse is a chain of small dependent products
  (1 or 8 rows against a 512 x 1536 kernel), bound by how fast one of them
  runs, not by FLOPs.  The per-product times at those shapes, summed along the
  traverse's critical path, give the least time any traverse with these
  kernels can take.

With ``--table_json`` (the ``--json`` of ``bench_table.py``, with the
original's figures in it), each measured rate is set against its ceiling:
achieved GFLOP/s, the share of peak, the most items/s the peak allows, and the
best ratio to the original that this machine permits (peak / our FLOPs per
item / the original's measured rate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_table import _json_lines, _run  # noqa: E402  (bench/ is on the path above)

SIZES = {"small": "rhy_pr", "paper": "paper"}
PRODUCT_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
BRANCHING_OPS = ("If", "StatelessIf")  # one branch runs: the larger one is counted
CALLING_OPS = ("PartitionedCall", "StatefulPartitionedCall")  # the called function runs once
LOOPING_OPS = ("While", "StatelessWhile")  # trip count unknown to a graph walk: not counted, reported


def _called_graph(graph, op, attr):
    return graph._get_function(op.get_attr(attr).name).graph


def _needed(graph) -> list:
    """The operations ``graph.outputs`` depend on (through data and control inputs), in graph order."""
    seen, todo = set(), [t.op for t in graph.outputs]
    while todo:
        op = todo.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        todo.extend(t.op for t in op.inputs)
        todo.extend(op.control_inputs)
    return [op for op in graph.get_operations() if op.name in seen]


def product_flops(graph) -> dict:
    """{"flops": 2*m*k*n summed over the graph's matrix products, "products": count, "loops": loops not counted}.

    Only operations the graph's outputs depend on are counted (the ones that
    run).  Shapes must be static (trace with a fixed batch).  ``BatchMatMul``
    counts its broadcast batch dims; ``transpose_*``/``adj_*`` are honoured.
    Called functions are counted once and conditionals by their larger branch;
    loop bodies (``tf.scan``, ``tf.while_loop``) are not, and come back as
    ``loops``.
    """
    flops, products, loops = 0, 0, 0
    for op in _needed(graph):
        if op.type in LOOPING_OPS:
            loops += 1
            continue
        if op.type in CALLING_OPS or op.type in BRANCHING_OPS:
            attrs = ("f",) if op.type in CALLING_OPS else ("then_branch", "else_branch")
            inner = [product_flops(_called_graph(graph, op, a)) for a in attrs]
            pick = max(inner, key=lambda c: c["flops"])
            flops, products = flops + pick["flops"], products + pick["products"]
            loops += sum(c["loops"] for c in inner)
            continue
        if op.type not in PRODUCT_OPS:
            continue
        a, b = op.inputs[0].shape, op.inputs[1].shape
        if not (a.is_fully_defined() and b.is_fully_defined()):
            raise ValueError(f"{op.name}: product shapes {a} x {b} are not static; trace with a fixed batch")
        a, b = a.as_list(), b.as_list()
        if op.type == "MatMul":
            ta, tb = op.get_attr("transpose_a"), op.get_attr("transpose_b")
        else:
            ta, tb = op.get_attr("adj_x"), op.get_attr("adj_y")
        m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
        n = b[-2] if tb else b[-1]
        batch = 1
        for size in (a[:-2] if len(a) >= len(b) else b[:-2]):
            batch *= size
        flops += 2 * batch * m * k * n
        products += 1
    return {"flops": flops, "products": products, "loops": loops}


def model_flops(config_name: str, batch: int = 256, traverse_steps: int = 8, overrides=None) -> dict:
    """FLOPs per training example, per decoded measure and per traverse of this package's model.

    The recurrences are traced unrolled (``model.unroll=True``, every config's
    default but ``quick``'s), whose products a graph walk can count.
    """
    import keras
    import tensorflow as tf

    from music_attr_vae.configs_loader import load_config
    from music_attr_vae.data.attributes import ATTRIBUTE_NAMES
    from music_attr_vae.model.vae import build_model

    config = load_config(config_name, {**(overrides or {}), "model.unroll": True})
    keras.utils.set_random_seed(0)
    model = build_model(config)
    ticks, z_dim, n_attrs = model.codec.ticks_per_measure, model.z_dim, len(ATTRIBUTE_NAMES)

    def train(tokens, attributes):
        return model._loss_and_grads(tokens, attributes, tf.constant(5000, tf.int64))[0]

    def decode(z):
        return model.decoder.free_running(z, 0.0, 0)[0]

    def traverse(tokens):
        z_mean, _ = model.encoder(tokens, training=False)
        z = tf.repeat(z_mean, traverse_steps, axis=0)
        return model.decoder.free_running(z, 0.0, 0)[0]

    graphs = {
        "train_example": (train, [tf.TensorSpec([batch, ticks], tf.int32), tf.TensorSpec([batch, n_attrs], tf.float32)],
                          batch),
        "decode_measure": (decode, [tf.TensorSpec([batch, z_dim], tf.float32)], batch),
        "traverse": (traverse, [tf.TensorSpec([1, ticks], tf.int32)], 1),
    }
    out = {"config": config_name, "params": int(model.count_params())}
    for name, (fn, spec, per) in graphs.items():
        counted = product_flops(tf.function(fn, autograph=False).get_concrete_function(*spec).graph)
        if counted["loops"]:
            raise ValueError(f"{config_name}: the {name} graph has {counted['loops']} loop(s) whose products "
                             "a graph walk cannot count")
        out[name] = {"flops": counted["flops"] // per, "flops_per_call": counted["flops"], "batch": per,
                     "products": counted["products"]}
    return out


def _chain_seconds(m: int, k: int, n: int, xla: bool, length: int, repeats: int) -> float:
    """Seconds per product of ``length`` dependent float32 (m, k) @ (k, n) products run in one call (best of repeats).

    Each product's whole output feeds the next one (its ``n / k`` column
    blocks summed, so ``n`` must be a multiple of ``k``): no part of a product
    is dead code that XLA could drop.
    """
    import tensorflow as tf

    if n % k:
        raise ValueError(f"n={n} must be a multiple of k={k}")
    a = tf.random.normal([m, k], seed=1) * 0.01
    b = tf.random.normal([k, n], seed=2) * 0.01

    @tf.function(jit_compile=xla, autograph=False)
    def chain(x, w):
        def body(i, x):
            y = tf.matmul(x, w)
            return i + 1, tf.tanh(tf.reduce_sum(tf.reshape(y, [m, n // k, k]), axis=1))

        return tf.while_loop(lambda i, _: i < length, body, (tf.constant(0), x))[1]

    chain(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        chain(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return best / length


def nominal_peak_gflops() -> dict:
    """cores x clock x float32 FLOPs per cycle, from /proc/cpuinfo (Linux; {} elsewhere).

    FLOPs per cycle assume two fused multiply-add units per core: 32 with
    AVX2+FMA (8 lanes x 2 x 2), 64 with AVX-512.  The clock is the one the
    kernel reports, which a VM may not show boosting above.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return {}
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line.split(":")[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 8
    cores = os.cpu_count() or 1
    if not mhz:
        return {}
    return {"cores": cores, "mhz": max(mhz), "flops_per_cycle": per_cycle,
            "gflops": round(cores * max(mhz) * 1e6 * per_cycle / 1e9, 1)}


def peak_products(shapes, budget_flops: float = 2e10, repeats: int = 5) -> list:
    """[{m, k, n, kernel, us, gflops}] for each shape in plain TF and under XLA."""
    rows = []
    for m, k, n in shapes:
        flops = 2.0 * m * k * n
        length = int(max(8, min(4000, budget_flops / repeats / flops / 4)))
        for xla in (False, True):
            seconds = _chain_seconds(m, k, n, xla, length, repeats)
            rows.append({"m": m, "k": k, "n": n, "kernel": "xla" if xla else "tf", "us": round(seconds * 1e6, 1),
                         "gflops": round(flops / seconds / 1e9, 1)})
    return rows


def traverse_floor_ms(products: list, hidden: int, layers: int, beats: int = 4, ticks_per_beat: int = 6) -> dict:
    """Least traverse time with these kernels: its dependent products at the fastest measured time each.

    The encoder reads 1 measure: per direction and layer, ``beats *
    ticks_per_beat`` dependent (1, H) @ (H, 3H) recurrent products (the two
    directions could run on the two cores at once, so one direction's chain
    is counted, and the second layer's input projection, one product over all
    steps, is left out).  The decoder runs 8 rows: per tick, each layer's
    recurrent product and, below the top layer, the input product of the
    layer above, all (8, H) @ (H, 3H) and each waiting for the one before.
    Gate arithmetic, the beat level and the output layer are left out, so
    this is a floor, not an estimate.
    """
    def fastest(m):
        times = [p["us"] for p in products if p["m"] == m and p["k"] == hidden and p["n"] == 3 * hidden]
        return min(times) if times else None

    steps = beats * ticks_per_beat
    one, eight = fastest(1), fastest(8)
    if one is None or eight is None:
        return {}
    encoder = steps * layers * one
    decoder = steps * (2 * layers - 1) * eight
    return {"encoder_ms": round(encoder / 1e3, 2), "decoder_ms": round(decoder / 1e3, 2),
            "floor_ms": round((encoder + decoder) / 1e3, 2)}


def original_flops(python: str, original_dir: str, sizes) -> dict:
    """{size: {"train_example": FLOPs, "decode_measure": FLOPs, "traverse": FLOPs}} of the PyTorch original."""
    out = _run([python, os.path.join(HERE, "bench_original.py"), f"--original_dir={original_dir}",
                f"--sizes={','.join(sizes)}", "--count_flops"], timeout=1800)
    return {line["size"]: line["flops"] for line in _json_lines(out)}


def ceilings(flops: dict, peak_gflops: float, table: dict, original: dict) -> list:
    """Rows of (size, figure, our FLOPs/item, measured rate, achieved GFLOP/s, share of peak, ceiling, ratios)."""
    rows = []
    for size in flops:
        for figure, key in (("train", "train_example"), ("decode", "decode_measure")):
            ours_flops = flops[size][key]["flops"]
            entry = {"size": size, "figure": figure, "flops_per_item": ours_flops,
                     "ceiling_per_s": round(peak_gflops * 1e9 / ours_flops, 1)}
            if figure == "train":
                measured = (table.get("train") or {}).get(f"{size}/default")
            else:
                measured = ((table.get("serving") or {}).get(size) or {}).get("decode")
            theirs = ((table.get("original") or {}).get(size) or {}).get(figure)
            if measured:
                entry["measured_per_s"] = measured["value"]
                entry["achieved_gflops"] = round(measured["value"] * ours_flops / 1e9, 1)
                entry["share_of_peak"] = round(entry["achieved_gflops"] / peak_gflops, 3)
            if theirs:
                entry["original_per_s"] = theirs["value"]
                entry["best_possible_ratio"] = round(entry["ceiling_per_s"] / theirs["value"], 2)
                if measured:
                    entry["measured_ratio"] = round(measured["value"] / theirs["value"], 2)
                their_flops = (original.get(size) or {}).get(key)
                if their_flops:
                    entry["original_flops_per_item"] = their_flops
                    entry["original_achieved_gflops"] = round(theirs["value"] * their_flops / 1e9, 1)
            rows.append(entry)
    return rows


def _fmt(row: dict, key: str, scale: float, fmt: str) -> str:
    return fmt.format(row[key] * scale) if key in row else "—"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,paper", help="comma-separated: small, paper")
    parser.add_argument("--table_json", help="bench_table.py --json output: set its measured rates against the ceilings")
    parser.add_argument("--original_python", help="a Python with PyTorch: also count the original's FLOPs")
    parser.add_argument("--original_dir", help="with --original_python: a checkout of the original's code")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if bool(args.original_python) != bool(args.original_dir):
        parser.error("--original_python and --original_dir go together")
    sizes = [s for s in args.sizes.split(",") if s]
    if set(sizes) - set(SIZES):
        parser.error(f"--sizes: unknown {sorted(set(sizes) - set(SIZES))}; known: {', '.join(SIZES)}")
    table = {}
    if args.table_json:
        try:
            with open(args.table_json, encoding="utf-8") as f:
                table = json.load(f)
        except (OSError, ValueError) as e:
            parser.error(f"--table_json={args.table_json}: {e}")

    from music_attr_vae.configs_loader import load_config

    models = {size: load_config(SIZES[size], {}).model for size in sizes}
    flops = {size: model_flops(SIZES[size]) for size in sizes}
    for size in sizes:
        print(json.dumps({"flops": {size: flops[size]}}), flush=True)
    original = original_flops(args.original_python, args.original_dir, sizes) if args.original_python else {}
    if original:
        print(json.dumps({"original_flops": original}), flush=True)

    shapes = [(2048, 2048, 2048)]
    for model in models.values():
        h = model.dec_hidden
        shapes += [(6144, h, 3 * h), (256, h, 3 * h), (1, h, 3 * h), (8, h, 3 * h)]
    shapes = list(dict.fromkeys(shapes))
    load = round(os.getloadavg()[0], 2)
    products = peak_products(shapes)
    measured_peak = max(p["gflops"] for p in products)
    nominal = nominal_peak_gflops()
    # the ceiling is the higher of the two: a ratio above it cannot be reached on this machine
    peak = max(measured_peak, nominal.get("gflops", 0.0))
    for p in products:
        print(f"  {p['m']:>5} x {p['k']:>4} @ {p['k']:>4} x {p['n']:>5}  {p['kernel']:>3}  {p['us']:>10.1f} us"
              f"  {p['gflops']:>7.1f} GFLOP/s", flush=True)
    print(f"fastest float32 product: {measured_peak} GFLOP/s (load {load} before)", flush=True)
    if nominal:
        print(f"nominal float32 peak: {nominal['cores']} cores x {nominal['mhz']:,.0f} MHz x "
              f"{nominal['flops_per_cycle']} FLOP/cycle = {nominal['gflops']} GFLOP/s", flush=True)
    print(f"ceilings below use {peak} GFLOP/s", flush=True)

    results = {"machine": {"cpus": os.cpu_count(), "load_before_products": load}, "flops": flops,
               "original_flops": original, "products": products, "measured_peak_gflops": measured_peak,
               "nominal_peak": nominal, "peak_gflops": peak,
               "ceilings": ceilings(flops, peak, table, original), "traverse_floor": {}}
    for size, model in models.items():
        floor = traverse_floor_ms(products, model.dec_hidden, model.dec_layers)
        measured = ((table.get("serving") or {}).get(size) or {}).get("traverse")
        if measured:
            floor["measured_ms"] = round(measured["value"], 2)
        results["traverse_floor"][size] = floor

    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print("\n| size | figure | FLOPs per item, ours / original | measured /s | GFLOP/s achieved, ours / original"
          " | share of peak | ceiling /s at peak | ratio to original, measured / best possible |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["ceilings"]:
        print("| " + " | ".join([
            r["size"], r["figure"],
            f"{_fmt(r, 'flops_per_item', 1e-6, '{:,.0f}M')} / {_fmt(r, 'original_flops_per_item', 1e-6, '{:,.0f}M')}",
            _fmt(r, "measured_per_s", 1, "{:,.0f}"),
            f"{_fmt(r, 'achieved_gflops', 1, '{:.0f}')} / {_fmt(r, 'original_achieved_gflops', 1, '{:.0f}')}",
            _fmt(r, "share_of_peak", 1, "{:.0%}"), _fmt(r, "ceiling_per_s", 1, "{:,.0f}"),
            f"{_fmt(r, 'measured_ratio', 1, '{:.2f}x')} / {_fmt(r, 'best_possible_ratio', 1, '{:.2f}x')}",
        ]) + " |")
    for size, floor in results["traverse_floor"].items():
        if floor:
            print(f"traverse floor, {size}: {floor['floor_ms']} ms (encoder {floor['encoder_ms']}, decoder "
                  f"{floor['decoder_ms']}) with the fastest measured product at each shape"
                  + (f"; measured {floor['measured_ms']} ms" if "measured_ms" in floor else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
