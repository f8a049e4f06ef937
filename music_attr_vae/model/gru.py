"""A GRU written for short, fixed-length sequences on CPU (and fine on GPU).

Why not ``keras.layers.GRU``?  Its cell multiplies the input by the input
kernel at every step.  Here the input projection of a whole sequence is one
large matrix product (``project``), done before the recurrence, so only the
recurrent product ``h @ U`` stays inside the loop; when the input is a token
embedding the projection is even a table lookup (``project`` the embedding
matrix once, then gather).  The loops are unrolled in Python by default (the
sequences are 4, 6 or 24 steps), which lets XLA fuse each step's gate
arithmetic; ``unroll=False`` uses ``tf.scan`` instead, which compiles several
times faster for ~20% slower steps (good for tests and tiny models).

Gates follow Keras' ``reset_after=True`` convention (cuDNN-compatible):
``z = σ(x_z + h U_z + b_z)``, ``r = σ(x_r + h U_r + b_r)``,
``h̃ = tanh(x_h + r ⊙ (h U_h + b_h))``, ``h' = z ⊙ h + (1 - z) ⊙ h̃``, with
the input bias folded into the projection.
"""

from __future__ import annotations

import contextlib
import threading
from typing import List, Optional, Tuple

import keras
import tensorflow as tf


MATMUL_DTYPES = ("float32", "bfloat16")
_override = threading.local()


@contextlib.contextmanager
def products_in(dtype: Optional[str]):
    """Trace GRU products in ``dtype`` inside this block, whatever each GRU's ``matmul_dtype``.

    The override acts while a graph is *traced* (eager calls and tf.function
    tracing alike), which is how a model trained with bfloat16 products serves
    with float32 ones: its weights are float32 either way.
    """
    if dtype is not None and dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul dtype {dtype!r} must be one of {MATMUL_DTYPES}")
    previous = getattr(_override, "dtype", None)
    _override.dtype = dtype
    try:
        yield
    finally:
        _override.dtype = previous


def _effective(dtype: str) -> str:
    return getattr(_override, "dtype", None) or dtype


def matmul(a, b, dtype: str = "float32", transpose_a: bool = False, transpose_b: bool = False):
    """``a @ b`` (rank-2 ``b``, any leading dims of ``a``), optionally with bfloat16 operands.

    bfloat16 operands keep float32 variables, states and gate arithmetic; only
    the products run in bfloat16, which oneDNN executes on AMX/AVX512-BF16 units
    several times faster than float32 on CPUs that have them.  ``b`` may be
    given already cast (see ``GRU.recurrent_operand``).  The transposes are for
    rank-2 ``a`` (the recurrence's backward pass).
    """
    if _effective(dtype) != "float32":
        a, b = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)
    if a.shape.rank != 2:
        assert not (transpose_a or transpose_b), "transposed products take a rank-2 a"
        out = tf.tensordot(a, b, axes=1)
    else:
        out = tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    return out if out.dtype == tf.float32 else tf.cast(out, tf.float32)


def _gate_values(x_proj, h_proj, h, last_axis=-1):
    """One GRU update and what its gradient needs: (new state, z, r, candidate, h-part of the projected state).

    ``last_axis`` may be given as a tensor made once per sequence, so an
    unrolled loop does not add a constant to the graph at each step.  The new
    state ``z*h + (1-z)*candidate`` is computed as ``candidate + z*(h -
    candidate)``: the same value in one operation fewer per step.
    """
    xz, xr, xh = tf.split(x_proj, 3, axis=last_axis)
    hz, hr, hh = tf.split(h_proj, 3, axis=last_axis)
    z = tf.sigmoid(xz + hz)
    r = tf.sigmoid(xr + hr)
    candidate = tf.tanh(xh + r * hh)
    return candidate + z * (h - candidate), z, r, candidate, hh


def _gates(x_proj, h_proj, h):
    """One GRU update from the projected input (B, 3H) and the projected state."""
    return _gate_values(x_proj, h_proj, h)[0]


def recurrence(x_proj, h0, kernel, bias, reverse: bool = False, dtype: str = "float32",
               time_major: bool = False, zero_start: bool = False):
    """The unrolled GRU recurrence over a projected sequence, with a hand-written backward pass.

    ``x_proj`` (B, T, 3H), or (T, B, 3H) with ``time_major``, is the projected
    input, ``h0`` (B, H) the initial state, ``kernel`` (H, 3H) and ``bias``
    (3H,) the recurrent weights as product operands
    (``GRU.recurrent_operands``).  With ``reverse`` the sequence is read from
    its last step to its first, and the outputs stay in input order (a
    backward direction without reversing copies).  ``zero_start`` promises
    that ``h0`` is zeros: the gradient then skips the products that only
    serve ``h0``.  Returns (outputs (B, T, H) or (T, B, H), last state (B, H)).

    The forward pass is exactly ``GRU.step`` repeated.  The backward pass is
    back-propagation through time written out: per step, the gate gradients
    from the saved gate values (``SigmoidGrad``/``TanhGrad``) and one product
    with the transposed kernel for the previous state; after the loop, the
    kernel's gradient as **one** product over all steps at once (the outputs,
    shifted by a step, ``(T*B, H)^T @ (T*B, 3H)``) and the bias's as one sum.
    Automatic differentiation of the unrolled loop makes T small products and
    T broadcast sums, accumulated pairwise, which is slower to run and twice
    as many graph operations to trace (BUILD_NOTES "Model and training").

    Time-major sequences cost no copies at the loop's edges: a step's slice,
    the stacked outputs and the stacked input gradients are contiguous blocks
    (TensorFlow slices and unstacks the first axis in place).  Batch-major
    ones are transposed once on the way in and out.
    """
    axis = 0 if time_major else 1

    @tf.custom_gradient
    def run(x_proj, h0, kernel, bias):
        steps = x_proj.shape[axis]
        xs = tf.unstack(x_proj, axis=axis, num=steps)
        order = list(range(steps - 1, -1, -1)) if reverse else list(range(steps))
        h, outputs, saved = h0, [None] * steps, []
        last_axis = tf.constant(-1)  # shared by every step
        for t in order:
            h_new, z, r, candidate, hh = _gate_values(xs[t], matmul(h, kernel, dtype) + bias, h, last_axis)
            saved.append((t, h, z, r, candidate, hh))
            outputs[t] = h = h_new
        stacked = tf.stack(outputs, axis=0)  # (T, B, H): the states the kernel's gradient pairs with

        def grad(d_outputs, d_last):
            d_steps = tf.unstack(d_outputs, axis=axis, num=steps) if d_outputs is not None else [None] * steps
            carry = d_last
            d_gates, d_inputs = [None] * steps, [None] * steps
            for t, h_prev, z, r, candidate, hh in reversed(saved):
                d_h = carry if d_steps[t] is None else (d_steps[t] if carry is None else carry + d_steps[t])
                if d_h is None:
                    d_h = tf.zeros_like(h_prev)
                d_keep = d_h * z                       # through z * h
                d_cand = tf.raw_ops.TanhGrad(y=candidate, dy=d_h - d_keep)  # through (1 - z) * candidate
                d_z = tf.raw_ops.SigmoidGrad(y=z, dy=d_h * (h_prev - candidate))
                d_r = tf.raw_ops.SigmoidGrad(y=r, dy=d_cand * hh)
                d_gates[t] = tf.concat([d_z, d_r, d_cand * r], axis=last_axis)  # w.r.t. h_prev @ U + b
                d_inputs[t] = tf.concat([d_z, d_r, d_cand], axis=last_axis)  # w.r.t. x_proj[t]
                if zero_start and t == order[0]:
                    carry = tf.zeros_like(h_prev)  # h0 is a constant: its gradient is not needed
                else:
                    carry = d_keep + matmul(d_gates[t], kernel, dtype, transpose_b=True)
            # kernel: step t's previous state is the output of the step read before it (h0 for the first)
            rows = tf.shape(h0)[0]
            gates = tf.reshape(tf.stack(d_gates, axis=0), [-1, kernel.shape[-1]])  # (T*B, 3H), time order
            states = tf.reshape(stacked, [-1, h0.shape[-1]])
            cut = (steps - 1) * rows
            if reverse:  # step t follows step t + 1
                d_kernel = matmul(states[rows:], gates[:cut], dtype, transpose_a=True)
            else:
                d_kernel = matmul(states[:cut], gates[rows:], dtype, transpose_a=True)
            if not zero_start:
                first = order[0]
                d_kernel += matmul(h0, d_gates[first], dtype, transpose_a=True)
            d_bias = tf.reduce_sum(gates, axis=0)
            return (tf.stack(d_inputs, axis=axis), carry, tf.cast(d_kernel, kernel.dtype), tf.cast(d_bias, bias.dtype))

        seq = stacked if time_major else tf.transpose(stacked, [1, 0, 2])
        return (seq, h), grad

    return run(x_proj, h0, kernel, bias)


class GRU(keras.layers.Layer):
    """Single-direction GRU: ``project`` inputs, then ``run`` the recurrence (or ``step`` it)."""

    def __init__(self, units: int, chains: int = 1, unroll: bool = True, matmul_dtype: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"matmul_dtype={matmul_dtype!r} must be one of {MATMUL_DTYPES}")
        self.units = int(units)
        self.chains = max(1, int(chains))
        self.unroll = bool(unroll)
        self.matmul_dtype = matmul_dtype

    def build(self, input_shape):
        in_dim = int(input_shape[-1])
        h3 = 3 * self.units
        self.kernel = self.add_weight(shape=(in_dim, h3), initializer="glorot_uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, h3), initializer="orthogonal", name="recurrent_kernel"
        )
        self.bias = self.add_weight(shape=(2, h3), initializer="zeros", name="bias")

    def _operand(self, variable):
        """A weight in the product's operand type."""
        value = tf.convert_to_tensor(variable)
        return value if _effective(self.matmul_dtype) == "float32" else tf.cast(value, tf.bfloat16)

    def input_operands(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(input kernel as product operand, input bias): read once by callers that project step by step."""
        return self._operand(self.kernel), self.bias[0]

    def recurrent_operands(self) -> Tuple[tf.Tensor, tf.Tensor]:
        """(recurrent kernel as product operand, recurrent bias): read once per sequence, not per step.

        Reading (and casting) the weights once keeps an unrolled loop's graph
        small: per step it holds the product and the gates, no variable reads
        or slices, which is what tracing and graph optimisation pay for.
        """
        return self._operand(self.recurrent_kernel), self.bias[1]

    def project(self, x, operands=None):
        """Input projection ``x @ W + b_in`` over any leading dims: (..., in) -> (..., 3H).

        ``operands`` is ``input_operands()``, hoisted by callers that loop.
        """
        kernel, bias = self.input_operands() if operands is None else operands
        return matmul(x, kernel, self.matmul_dtype) + bias

    def step(self, x_proj_t, h, operands=None):
        """One step: projected input (B, 3H), state (B, H) -> new state (B, H).

        ``operands`` is ``recurrent_operands()``, hoisted by callers that loop.
        """
        kernel, bias = self.recurrent_operands() if operands is None else operands
        return _gates(x_proj_t, matmul(h, kernel, self.matmul_dtype) + bias, h)

    def run(self, x_proj, h0=None, reverse: bool = False, time_major: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
        """Recurrence over a projected sequence (B, T, 3H) -> (outputs (B, T, H), last state).

        With ``time_major`` the sequence and the outputs are (T, B, ...), which
        is what a stack of recurrences should pass between its layers (no
        copies at the loop's edges, see ``recurrence``).  With ``reverse`` the
        sequence is read from its last step to its first (outputs stay in
        input order; the last state is the one after step 0).

        With ``chains > 1`` the batch is cut into that many independent
        recurrences.  The arithmetic is the same, but XLA on CPU runs each
        chain of small matrix products on one thread, so independent chains
        are what lets a step use several cores.
        """
        batch_axis = 1 if time_major else 0
        zero_start = h0 is None
        if zero_start:
            h0 = tf.zeros([tf.shape(x_proj)[batch_axis], self.units], x_proj.dtype)
        if self.chains == 1:
            return self._run_chain(x_proj, h0, reverse, time_major, zero_start)
        n = tf.shape(x_proj)[batch_axis]
        sizes = tf.stack([(n + self.chains - 1 - i) // self.chains for i in range(self.chains)])
        parts = [
            self._run_chain(x, h, reverse, time_major, zero_start)
            for x, h in zip(
                tf.split(x_proj, sizes, axis=batch_axis, num=self.chains),
                tf.split(h0, sizes, axis=0, num=self.chains),
            )
        ]
        return tf.concat([p[0] for p in parts], axis=batch_axis), tf.concat([p[1] for p in parts], axis=0)

    def _run_chain(self, x_proj, h, reverse: bool = False, time_major: bool = False, zero_start: bool = False):
        operands = self.recurrent_operands()
        if not self.unroll:  # a loop op: ~20% slower steps, but compiles in a fraction of the time
            seq = x_proj if time_major else tf.transpose(x_proj, [1, 0, 2])
            states = tf.scan(lambda prev, x_t: self.step(x_t, prev, operands), seq, initializer=h, reverse=reverse)
            last = states[0] if reverse else states[-1]
            return (states if time_major else tf.transpose(states, [1, 0, 2])), last
        return recurrence(x_proj, h, *operands, reverse=reverse, dtype=self.matmul_dtype,
                          time_major=time_major, zero_start=zero_start)

    def call(self, x, initial_state=None):
        """x (B, T, in) -> outputs (B, T, H)."""
        return self.run(self.project(x), initial_state)[0]


class BiGRU(keras.layers.Layer):
    """Bidirectional GRU: a forward and a backward ``GRU``.

    ``call(x)`` returns the concatenated per-step outputs (B, T, 2H) when
    ``return_sequences``, else the concatenation of the forward direction's
    last state and the backward direction's last state (the one after it has
    read the first token), (B, 2H), as ``keras.layers.Bidirectional`` does.
    ``call_projected`` takes the two directions' inputs already projected by
    ``project`` (or looked up in a projected embedding table).
    """

    def __init__(
        self, units: int, return_sequences: bool = False, chains: int = 1, unroll: bool = True,
        matmul_dtype: str = "float32", **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.forward = GRU(units, chains=chains, unroll=unroll, matmul_dtype=matmul_dtype, name="forward")
        self.backward = GRU(units, chains=chains, unroll=unroll, matmul_dtype=matmul_dtype, name="backward")

    def build(self, input_shape):
        self.forward.build(input_shape)
        self.backward.build(input_shape)

    def project(self, x):
        """(..., in) -> [forward (..., 3H), backward (..., 3H)] input projections."""
        return [self.forward.project(x), self.backward.project(x)]

    def call_projected(self, x_proj: List[tf.Tensor], time_major: bool = False):
        """[forward, backward] projected inputs (B, T, 3H) each -> outputs (see class docstring).

        With ``time_major`` the inputs and the returned sequence are (T, B, ...).
        """
        fwd_seq, fwd_last = self.forward.run(x_proj[0], time_major=time_major)
        bwd_seq, bwd_last = self.backward.run(x_proj[1], reverse=True, time_major=time_major)
        if not self.return_sequences:
            return tf.concat([fwd_last, bwd_last], axis=-1)
        return tf.concat([fwd_seq, bwd_seq], axis=-1)

    def call(self, x):
        return self.call_projected(self.project(x))
