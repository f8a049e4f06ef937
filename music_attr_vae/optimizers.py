"""Adam and AdamW whose per-variable update is TensorFlow's fused ``ResourceApplyAdam`` kernel.

Keras' Adam writes each variable's update as some twenty element-wise
operations (two moment updates, a square root, a division, ...), and it
recomputes the bias-correction scalars for every variable: for the 36 weights
of this model that is about 1,500 graph operations for ``train`` to trace and
optimise before its first step (~1 s of the paper-size model's first step),
and 20 passes over every weight, moment and gradient per step.  Here the
scalars are computed once per step and each variable takes one
``ResourceApplyAdam``, which computes the same formula in one pass::

    alpha = lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    m += (g - m) * (1 - beta_1);  v += (g * g - v) * (1 - beta_2)
    w -= alpha * m / (sqrt(v) + epsilon)

The variables, their names and so checkpoints are Keras' own.  The fused kernel
is used where it is exact and simple: float32 weights, dense gradients, no
AMSGrad, and no ``tf.distribute`` strategy other than the default one (the
CPU's); anywhere else the update is Keras' (``tests/test_optimizers.py``).
"""

from __future__ import annotations

import keras
import tensorflow as tf


class _FusedAdamUpdate:
    """Mixin over ``keras.optimizers.Adam``/``AdamW``: ``update_step`` through ``ResourceApplyAdam``."""

    _fused_scalars = None

    def _fused(self) -> bool:
        return (keras.backend.backend() == "tensorflow" and not self.amsgrad
                and not tf.distribute.has_strategy())

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self._fused():
            step = tf.cast(self.iterations + 1, tf.float32)
            self._fused_scalars = (
                tf.cast(learning_rate, tf.float32),
                tf.pow(tf.cast(self.beta_1, tf.float32), step),
                tf.pow(tf.cast(self.beta_2, tf.float32), step),
                tf.constant(self.beta_1, tf.float32),
                tf.constant(self.beta_2, tf.float32),
                tf.constant(self.epsilon, tf.float32),
            )
        try:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._fused_scalars = None

    def update_step(self, gradient, variable, learning_rate):
        scalars = self._fused_scalars
        if (scalars is None or variable.dtype != tf.float32 or isinstance(gradient, tf.IndexedSlices)
                or not hasattr(variable, "handle")):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index], self._velocities[index]
        lr, beta_1_power, beta_2_power, beta_1, beta_2, epsilon = scalars
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=momentum.value.handle, v=velocity.value.handle,
            beta1_power=beta_1_power, beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2,
            epsilon=epsilon, grad=tf.cast(gradient, tf.float32), use_locking=False, use_nesterov=False,
        )


class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with the fused update (see the module docstring)."""


class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with the fused update; the decoupled weight decay stays Keras'."""
