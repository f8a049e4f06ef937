"""Throughput of the ORIGINAL PyTorch MeasureVAE (Pati & Lerch), timed on this machine.

This harness times the authors' own model code so that its figures can be set
beside ours (``bench_train.py``, ``bench_table.py``) measured in the same
sitting, rather than quoted from another one.  It needs a checkout of the
original, which is NOT part of this repository and is never imported by the
package: github.com/ashispati/ar-vae, folders ``measurevae/`` (encoder.py,
decoder.py, measure_vae.py) and ``utils/`` (model.py, helpers.py), in the
repository's own layout, so that ``import measurevae.measure_vae`` works with
``--original_dir`` on ``sys.path``.  If the checkout lacks
``utils/helpers.py`` (the model files import only ``to_cuda_variable`` from
it), point ``--stubs_dir`` at a folder holding a stand-in ``utils/helpers.py``;
by default ``<original_dir>_stubs`` is used when it exists.  It needs PyTorch
and numpy, best in a virtualenv of their own (TensorFlow and torch are not
installed side by side)::

    python3 -m venv /opt/orig-venv && /opt/orig-venv/bin/pip install torch numpy
    /opt/orig-venv/bin/python bench/bench_original.py --original_dir=/work/original_measurevae \\
        [--sizes=small,paper] [--steps=20] [--warmup=3] [--threads=2] [--json=PATH]

Sizes (``MeasureVAE(...)`` constructor arguments; everything else at the
constructor's defaults, GRU dropout 0.5 in encoder and decoder):

- ``small``: latent 32, GRU hidden 128, 2 layers, note embedding 10 -- the
  defaults of ar-vae's ``train_measure_vae.py`` (the AR-VAE experiments).
- ``paper``: latent 256, GRU hidden 512, 2 layers, note embedding 10 -- the
  defaults of the ``MeasureVAE`` constructor itself.

The vocabulary of the original is not fixed in code: its bar dataset counts
every distinct music21 note name (``nameWithOctave``, so enharmonic spellings
are separate tokens) in the folk corpus and its transpositions, plus
``'__'`` (hold), ``START``, ``END``, ``'rest'`` and ``None``.  Transpositions
keep pitches in MIDI 55..84, so ``--num_notes`` defaults to 35 (30 pitches +
5 symbols), the smallest such vocabulary; a real dictionary has a few more
spellings, which changes only the embeddings and the output layer.  Inputs are
random valid token ids, 24 ticks per measure.

What is timed, for each size, in one process, with ``torch.set_num_threads``:

(a) training examples/s at ``--batch`` (256): the full step as the original
    trainer runs it -- ``model.train()``, ``model(score, score, train=True)``
    (the decoder flips a coin per batch: teacher forcing with probability 0.5,
    otherwise it feeds back its own argmax), reconstruction cross-entropy on
    the decoder's outputs + beta*KL (beta 0.001) + the attribute-regularization
    loss (mean |tanh(delta * dz) - sign(da)| over all pairs of the batch,
    delta 10, gamma 1) on ``--reg_dims`` latent dimensions with random dummy
    attribute values (the original computes the attributes from the batch in
    Python each step; that cost is left out), backward, Adam (lr 1e-4).
    ``--warmup`` steps are run first and not timed.  The input batch is made
    once, so no data loading is timed.
(b) decode measures/s: free-running greedy decoding of ``--batch`` random z's
    under ``torch.no_grad()`` with ``model.eval()``, the way the original
    decodes at inference (``model.decoder(z, zeros, train=False)``: no teacher
    forcing, argmax feedback).
(c) traverse: encode 1 measure (``model.encoder``, a sample of q(z|x) as the
    original's ``compute_representations`` takes), make 8 copies with latent
    dim 0 set to 8 values in [-4, 4], decode the 8 as one batch; median ms
    over ``--traverse_repeats`` repeats.  (The original's own interpolation
    code decodes the copies one at a time.)

The 1-minute load average is printed beside every figure: other processes on
the machine slow the wall clock, and with 2 OpenMP threads on 2 cores one
process busy elsewhere can cost far more than half (compare ``--threads=1``).
The process CPU seconds per training step and per decoded batch are given too.
One JSON line per size is printed (and written to ``--json`` if given) with the
figures, the loads, the parameter count and the torch version.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

SIZES = {
    # name: MeasureVAE constructor arguments
    "small": dict(note_embedding_dim=10, num_encoder_layers=2, encoder_hidden_size=128,
                  latent_space_dim=32, num_decoder_layers=2, decoder_hidden_size=128),
    "paper": dict(note_embedding_dim=10, num_encoder_layers=2, encoder_hidden_size=512,
                  latent_space_dim=256, num_decoder_layers=2, decoder_hidden_size=512),
}
TICKS = 24
BETA = 0.001
GAMMA = 1.0
DELTA = 10.0
LR = 1e-4


def load1():
    return round(os.getloadavg()[0], 2)


def import_original(original_dir, stubs_dir):
    """The original's MeasureVAE class, imported from its checkout (and the helpers stub if needed)."""
    original_dir = os.path.abspath(original_dir)
    if not os.path.isfile(os.path.join(original_dir, "measurevae", "measure_vae.py")):
        raise SystemExit(f"{original_dir}/measurevae/measure_vae.py not found: --original_dir must be a "
                         "checkout of github.com/ashispati/ar-vae (not part of this repository)")
    sys.path.insert(0, original_dir)
    used_stub = None
    if not os.path.isfile(os.path.join(original_dir, "utils", "helpers.py")):
        stubs_dir = os.path.abspath(stubs_dir or original_dir.rstrip("/") + "_stubs")
        if not os.path.isfile(os.path.join(stubs_dir, "utils", "helpers.py")):
            raise SystemExit(f"{original_dir}/utils/helpers.py is missing and no stand-in was found at "
                             f"{stubs_dir}/utils/helpers.py (see --stubs_dir)")
        sys.path.insert(1, stubs_dir)  # after the original: utils/ becomes one namespace package
        used_stub = os.path.join(stubs_dir, "utils", "helpers.py")
    from measurevae.measure_vae import MeasureVAE  # noqa: E402  (the authors' code)

    return MeasureVAE, used_stub


class _Vocabulary:
    """What MeasureVAE reads from its dataset argument: len(note2index_dicts) and repr()."""

    def __init__(self, num_notes):
        self.note2index_dicts = {i: i for i in range(num_notes)}

    def __repr__(self):
        return "random_bar_tokens"


def pairwise_sign_loss(z_dim_values, attribute, delta):
    """Attribute regularization of one latent dim: mean over all pairs of |tanh(delta*(z_i-z_j)) - sign(a_i-a_j)|."""
    import torch

    dz = z_dim_values[:, None] - z_dim_values[None, :]
    da = attribute[:, None] - attribute[None, :]
    return (torch.tanh(delta * dz) - torch.sign(da)).abs().mean()


def train_loss(model, score, attributes, reg_dims):
    """Loss of one batch as the original trainer forms it; also whether the decoder was teacher-forced."""
    import torch
    import torch.nn.functional as F

    weights, samples, z_dist, prior_dist, z_tilde, _ = model(score, score, train=True)
    recons = F.cross_entropy(weights.reshape(-1, weights.size(-1)), score.reshape(-1))
    kld = torch.distributions.kl.kl_divergence(z_dist, prior_dist).sum(1).mean()
    loss = recons + BETA * kld.abs()
    for d in range(reg_dims):
        loss = loss + GAMMA * pairwise_sign_loss(z_tilde[:, d], attributes[:, d], DELTA)
    forced = bool((samples.reshape(score.shape) == score).all())
    return loss, forced


def _model_and_batch(name, MeasureVAE, args):
    """(model, generator, score, attributes): the original at size ``name`` and one random batch, from ``--seed``."""
    import torch

    torch.manual_seed(args.seed)
    model = MeasureVAE(_Vocabulary(args.num_notes), **SIZES[name])
    gen = torch.Generator().manual_seed(args.seed)
    score = torch.randint(0, args.num_notes, (args.batch, TICKS), generator=gen)
    attributes = torch.rand(args.batch, max(args.reg_dims, 1), generator=gen)
    return model, gen, score, attributes


def traverse(model, one):
    """Encode 1 measure (a sample of q(z|x)), make 8 copies with latent dim 0 at 8 values in [-4, 4], decode them."""
    import torch

    z8 = model.encoder(one).rsample().repeat(8, 1)
    z8[:, 0] = torch.linspace(-4.0, 4.0, 8)
    return model.decoder(z8, torch.zeros(8, TICKS), False)[1]


def count_flops(name, MeasureVAE, args):
    """FLOPs of the original per training example, per decoded measure and per traverse (``--count_flops``).

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products
    and convolutions; elementwise arithmetic is not counted) around one
    training step's forward and backward at ``--batch``, one free-running
    decode of ``--batch`` z's and one traverse (encode 1 measure, decode 8),
    each as ``bench_size`` times them.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, gen, score, attributes = _model_and_batch(name, MeasureVAE, args)
    z_dim = SIZES[name]["latent_space_dim"]

    def counted(fn):
        mode = FlopCounterMode(display=False)
        with mode:
            fn()
        return int(mode.get_total_flops())

    model.train()
    train = counted(lambda: train_loss(model, score, attributes, args.reg_dims)[0].backward())
    model.eval()  # forward only; outside no_grad, whose inputs FlopCounterMode's module hooks cannot follow
    z = torch.randn(args.batch, z_dim, generator=gen)
    decode = counted(lambda: model.decoder(z, torch.zeros(args.batch, TICKS), False))

    one = counted(lambda: traverse(model, score[:1]))
    return {"size": name, "batch": args.batch, "num_notes": args.num_notes,
            "flops": {"train_example": train // args.batch, "decode_measure": decode // args.batch, "traverse": one}}


def bench_size(name, MeasureVAE, args, torch_version):
    import torch

    model, gen, score, attributes = _model_and_batch(name, MeasureVAE, args)
    params = sum(p.numel() for p in model.parameters())
    z_dim = SIZES[name]["latent_space_dim"]
    out = {"size": name, "threads": torch.get_num_threads(), "torch": torch_version,
           "num_notes": args.num_notes, "batch": args.batch, "params": params,
           "constructor": SIZES[name], "load_before": load1()}
    print(f"\n[{name}] {params:,} parameters, MeasureVAE({SIZES[name]}), vocabulary {args.num_notes}", flush=True)

    # (a) training
    if args.steps > 0:
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        model.train()

        def step():
            opt.zero_grad()
            loss, forced = train_loss(model, score, attributes, args.reg_dims)
            loss.backward()
            opt.step()
            return loss.item(), forced

        for _ in range(args.warmup):
            step()
        load_train = load1()
        forced_steps = 0
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(args.steps):
            last_loss, forced = step()
            forced_steps += forced
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        out.update(train_examples_per_s=round(args.steps * args.batch / dt, 1), train_steps=args.steps,
                   train_cpu_s_per_step=round(cpu / args.steps, 3),
                   train_warmup=args.warmup, teacher_forced_steps=forced_steps, train_last_loss=round(last_loss, 4),
                   load_train=load_train, load_train_after=load1())
        print(f"  train   {out['train_examples_per_s']:>10,.1f} examples/s  ({args.steps} steps of {args.batch}, "
              f"{forced_steps} teacher-forced; {out['train_cpu_s_per_step']} CPU s/step; "
              f"load {load_train} -> {out['load_train_after']})", flush=True)
        del opt

    model.eval()
    with torch.no_grad():
        # (b) free-running decode
        if args.decode_repeats > 0:
            z = torch.randn(args.batch, z_dim, generator=gen)
            dummy = torch.zeros(args.batch, TICKS)  # the original passes a float zeros "score" at inference
            for _ in range(args.decode_warmup):
                model.decoder(z, dummy, False)
            load_dec = load1()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(args.decode_repeats):
                _, samples = model.decoder(z, dummy, False)
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
            assert samples.numel() == args.batch * TICKS
            out.update(decode_measures_per_s=round(args.decode_repeats * args.batch / dt, 1),
                       decode_cpu_s_per_batch=round(cpu / args.decode_repeats, 3),
                       decode_repeats=args.decode_repeats, load_decode=load_dec)
            print(f"  decode  {out['decode_measures_per_s']:>10,.1f} measures/s  ({args.decode_repeats} x "
                  f"{args.batch}; load {load_dec})", flush=True)

        # (c) traverse: encode 1, 8 copies along dim 0, decode the 8
        if args.traverse_repeats > 0:
            one = score[:1]
            for _ in range(args.traverse_warmup):
                traverse(model, one)
            load_tr = load1()
            times = []
            for _ in range(args.traverse_repeats):
                t0 = time.perf_counter()
                traverse(model, one)
                times.append((time.perf_counter() - t0) * 1000.0)
            out.update(traverse_median_ms=round(statistics.median(times), 2), traverse_repeats=args.traverse_repeats,
                       load_traverse=load_tr)
            print(f"  traverse {out['traverse_median_ms']:>9.2f} ms median  ({args.traverse_repeats} repeats; "
                  f"load {load_tr})", flush=True)

    out["load_after"] = load1()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original_dir", required=True,
                        help="checkout of github.com/ashispati/ar-vae (holds measurevae/ and utils/)")
    parser.add_argument("--stubs_dir", default="",
                        help="folder with a stand-in utils/helpers.py, used only if the checkout lacks one "
                             "(default: <original_dir>_stubs)")
    parser.add_argument("--sizes", default="small,paper", help="comma-separated: " + ",".join(SIZES))
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (0: skip training)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--decode_repeats", type=int, default=10, help="timed decodes of a batch (0: skip)")
    parser.add_argument("--decode_warmup", type=int, default=2)
    parser.add_argument("--traverse_repeats", type=int, default=30, help="timed traversals (0: skip)")
    parser.add_argument("--traverse_warmup", type=int, default=3)
    parser.add_argument("--num_notes", type=int, default=35,
                        help="vocabulary size (the original's is data-dependent; see the docstring)")
    parser.add_argument("--reg_dims", type=int, default=2,
                        help="latent dims given the attribute-regularization loss (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="also write the JSON lines to this file")
    parser.add_argument("--count_flops", action="store_true",
                        help="instead of timing: print the FLOPs per training example, decoded measure and traverse")
    args = parser.parse_args(argv)

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {list(SIZES)}")

    import torch

    torch.set_num_threads(args.threads)
    MeasureVAE, used_stub = import_original(args.original_dir, args.stubs_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, original from "
          f"{os.path.abspath(args.original_dir)}" + (f", helpers stand-in {used_stub}" if used_stub else ""),
          flush=True)

    lines = []
    for name in sizes:
        result = count_flops(name, MeasureVAE, args) if args.count_flops else bench_size(
            name, MeasureVAE, args, torch.__version__)
        result["helpers_stub"] = bool(used_stub)
        line = json.dumps(result, sort_keys=False)
        print(line, flush=True)
        lines.append(line)
        if args.json:
            with open(args.json, "w") as f:
                f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
