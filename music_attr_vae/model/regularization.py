"""The attribute-regularization loss of Pati & Lerch (2019) as a Keras layer.

For an attribute ``a`` tied to latent dimension ``r`` the loss over a batch is

    gamma * mean_{i,j} loss( tanh(delta * (z_i^r - z_j^r)) - T_ij )

with ``loss`` the squared (``mse``) or absolute (``l1``) error and the target
``T_ij`` one of

``sign`` (the paper)
    ``sign(a_i - a_j)``: only the *order* of the attribute matters, so the
    optimum pushes pairs with different attributes far apart in ``z_r`` and
    the dimension ends up monotone but strongly non-linear in ``a``.  The paper
    uses ``delta=1`` with ``mse``; the authors' code ``delta=10`` with ``l1``.
``distance`` (this project's option)
    ``tanh(delta * scale * (a_i - a_j))``: zero loss exactly when
    ``z_i^r - z_j^r = scale * (a_i - a_j)`` for every pair, i.e. when
    ``z_r = scale * a + c``; the dimension becomes *linear* in the attribute,
    which makes "set the attribute to 0.4" a simple affine map.  ``scale`` is
    per attribute; a few prior standard deviations over the attribute's range
    (4 for the [0, 1] attributes, 2 for contour in [-1, 1]) keeps ``z_r``
    inside the region the decoder sees during training.

The mean runs over all ``B*B`` ordered pairs of the batch, the diagonal
included (its terms are always zero), as in the authors' code.

**Distribution strategies.**  The pairs are formed *within each replica's
batch*: under ``MirroredStrategy`` / ``MultiWorkerMirroredStrategy`` every
replica sees ``global_batch / num_replicas`` examples and compares only those
with each other.  No cross-replica communication is needed, and the loss is
an unbiased estimate of the same population quantity (the mean over random
pairs), just from fewer pairs per replica.  The value returned is a
per-replica mean, like the reconstruction and KL terms; the model scales the
total by ``1 / num_replicas`` before taking gradients (Keras sums gradients
over replicas), so the global gradient is the average over replicas.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import keras
import tensorflow as tf

from music_attr_vae.data.attributes import ATTRIBUTE_NAMES

LOSSES = ("l1", "mse")
TARGETS = ("sign", "distance")
# z_r spans about `scale` prior standard deviations over the attribute's range.
DEFAULT_DISTANCE_SCALE = {
    "rhythmic_complexity": 4.0,
    "pitch_range": 4.0,
    "note_density": 4.0,
    "contour": 2.0,
}
# The one home of a regularization entry's defaults (the authors' code: L1, delta=10, gamma=1, the
# paper's sign target; consistency off); configs/common.py builds its entries from default_entry.
DEFAULTS = {"gamma": 1.0, "delta": 10.0, "loss": "l1", "target": "sign", "consistency": 0.0, "monotone": 0.0}
_FIELDS = ("dim", "gamma", "delta", "loss", "target", "scale", "consistency", "monotone")


def default_entry(name: str) -> Dict[str, object]:
    """Every field of attribute ``name``'s regularization entry except ``dim``, at its default."""
    return dict(DEFAULTS, scale=DEFAULT_DISTANCE_SCALE[name])


def normalize_mapping(
    mapping: Mapping[str, Mapping], z_dim: int, attribute_names: Sequence[str] = ATTRIBUTE_NAMES
) -> Dict[str, Dict]:
    """Validate a {attribute: {dim, gamma, delta, loss, target, scale, consistency, monotone}} mapping; fill defaults.

    Raises ValueError naming the attribute and the field for: an unknown
    attribute, an unknown field, a dim outside [0, z_dim), two attributes on
    one dim, a negative gamma, consistency or monotone weight, a non-positive delta or
    scale, or a loss/target outside the supported sets.  Plain dicts and
    ConfigDicts are accepted.  ``consistency`` and ``monotone`` (default 0)
    weigh the decoder consistency and monotone terms of ``model/vae.py``
    (``MeasureVAE.consistency``); they do not change this layer's value.
    """
    out: Dict[str, Dict] = {}
    used_dims: Dict[int, str] = {}
    for name in mapping:
        spec = dict(mapping[name])
        where = f"regularization.{name}"
        if name not in attribute_names:
            raise ValueError(
                f"{where}: unknown attribute {name!r}; known attributes: {', '.join(attribute_names)}"
            )
        unknown = sorted(set(spec) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(_FIELDS)}")
        if "dim" not in spec:
            raise ValueError(f"{where}: 'dim' (the latent dimension to regularise) is required")
        dim = spec["dim"]
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < z_dim:
            raise ValueError(f"{where}.dim={dim!r} must be an integer in [0, z_dim={z_dim})")
        if dim in used_dims:
            raise ValueError(f"{where}.dim={dim} is already used by {used_dims[dim]!r}; give each attribute its own dim")
        used_dims[dim] = name
        full = default_entry(name)
        full.update(spec)
        if not float(full["gamma"]) >= 0.0:
            raise ValueError(f"{where}.gamma={full['gamma']!r} must be >= 0")
        for weight in ("consistency", "monotone"):
            if not float(full[weight]) >= 0.0:
                raise ValueError(f"{where}.{weight}={full[weight]!r} must be >= 0")
        if not float(full["delta"]) > 0.0:
            raise ValueError(f"{where}.delta={full['delta']!r} must be > 0")
        if not float(full["scale"]) > 0.0:
            raise ValueError(f"{where}.scale={full['scale']!r} must be > 0")
        if full["loss"] not in LOSSES:
            raise ValueError(f"{where}.loss={full['loss']!r} must be one of {LOSSES}")
        if full["target"] not in TARGETS:
            raise ValueError(f"{where}.target={full['target']!r} must be one of {TARGETS}")
        out[name] = {
            "dim": int(dim),
            "gamma": float(full["gamma"]),
            "delta": float(full["delta"]),
            "loss": str(full["loss"]),
            "target": str(full["target"]),
            "scale": float(full["scale"]),
            "consistency": float(full["consistency"]),
            "monotone": float(full["monotone"]),
        }
    return out


def pairwise_term(z_r, a, *, delta: float, loss: str, target: str, scale: float = 1.0):
    """``mean_{i,j} loss(tanh(delta*(z_i - z_j)) - T_ij)`` for one attribute (no gamma).

    ``z_r`` and ``a`` are float vectors of the same length (one replica's batch).
    """
    z_r = tf.cast(z_r, tf.float32)
    a = tf.cast(a, tf.float32)
    predicted = tf.tanh(delta * (z_r[:, None] - z_r[None, :]))
    attr_diff = a[:, None] - a[None, :]
    if target == "sign":
        wanted = tf.sign(attr_diff)
    else:
        wanted = tf.tanh(delta * scale * attr_diff)
    err = predicted - wanted
    return tf.reduce_mean(tf.abs(err) if loss == "l1" else tf.square(err))


class AttributeRegularization(keras.layers.Layer):
    """Adds the attribute-regularization terms for the mapped attributes.

    ``call(z, attributes, weight=1.0)`` takes the latent batch ``z`` (B, D) and
    the attribute batch (B, len(attribute_names)) in ``attribute_names``
    column order, and returns ``(total, terms)``: the weighted sum of the
    terms, and a dict ``{attribute: gamma * pairwise term}``.  ``weight``
    multiplies every gamma (used to ramp the regularization up).  Each call
    also updates one mean metric per attribute, ``reg_<attribute>`` (the
    unweighted-by-ramp ``gamma * term``), which the model reports.

    With an empty mapping the layer returns 0 and has no metrics (the base VAE).
    See the module docstring for the pair construction under a distribution
    strategy.
    """

    def __init__(
        self,
        mapping: Mapping[str, Mapping],
        z_dim: int,
        attribute_names: Sequence[str] = ATTRIBUTE_NAMES,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.attribute_names = tuple(attribute_names)
        self.z_dim = int(z_dim)
        self.mapping = normalize_mapping(mapping, self.z_dim, self.attribute_names)
        self.trackers = {
            name: keras.metrics.Mean(name=f"reg_{name}") for name in self.mapping
        }
        self.built = True  # no weights: nothing to build, so Keras never needs to trace it to build it

    def call(self, z, attributes, weight=1.0) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        terms = {}
        total = tf.constant(0.0, tf.float32)
        weight = tf.cast(weight, tf.float32)
        for name, spec in self.mapping.items():
            column = self.attribute_names.index(name)
            term = spec["gamma"] * pairwise_term(
                z[:, spec["dim"]],
                attributes[:, column],
                delta=spec["delta"],
                loss=spec["loss"],
                target=spec["target"],
                scale=spec["scale"],
            )
            self.trackers[name].update_state(term)
            terms[name] = term
            total = total + weight * term
        return total, terms

    def compute_output_spec(self, z, attributes, weight=1.0):
        scalar = keras.KerasTensor((), dtype="float32")
        return scalar, {name: keras.KerasTensor((), dtype="float32") for name in self.mapping}

    def get_config(self):
        config = super().get_config()
        config.update(mapping=self.mapping, z_dim=self.z_dim, attribute_names=list(self.attribute_names))
        return config
