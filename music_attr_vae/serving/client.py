"""The one client of an exported SavedModel: :class:`ServedModel`.

NumPy in, NumPy out.  It only calls the SavedModel's functions and reads its
metadata (``serving/export.py`` describes both), so whatever works here works
for any other client of the export.  The commands (generate, edit, evaluate
--saved_model) and the notebook all go through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import numpy as np

from music_attr_vae.data.codec import MeasureCodec
from music_attr_vae.serving.export import read_metadata
from music_attr_vae.serving.limits import LIMITS


_NO_GRADIENT_WARNING = "with ops with unsaved custom gradients"


class _DropNoGradientWarnings(logging.Filter):
    def filter(self, record):
        return _NO_GRADIENT_WARNING not in record.getMessage()


@contextlib.contextmanager
def _without_gradient_warnings():
    """Loading drops TensorFlow's warning, one per function, that the export has no custom gradients.

    The export leaves them out on purpose (``export.py``: serving takes no
    gradients, and they would double ``saved_model.pb``), so the warning only
    alarms a user.
    """
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]  # TF logs it through absl
    quiet = _DropNoGradientWarnings()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def answer_once(served: "ServedModel") -> None:
    """Set this process and ``served`` up to answer one request and exit, as ``generate`` and ``edit`` do.

    Two first-call costs are skipped, each worth it only to a process that
    answers many requests (BUILD_NOTES "Results, 0.10.0"):

    * TensorFlow's graph optimiser (grappler) is turned off, for the whole
      process.  It rewrites a SavedModel function before its first call: about
      0.9 s of a paper-size export's first 8-step traversal (1.3-1.4 s), and the
      traversals after it run as fast without it.
    * Requests of at most ``PLAIN_MAX_ROWS`` measures run the decoder without
      XLA (``served.module.plain_max_rows``; exports before 0.10.0 lack it and
      keep XLA).  XLA's first call costs 1-2 s even with the persistent cache;
      later small calls are 2-5 ms faster under it.

    Call it before the first request.  A notebook keeps the defaults.
    """
    import tensorflow as tf

    from music_attr_vae.serving.signatures import PLAIN_MAX_ROWS

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    module = served.module
    if hasattr(module, "plain_max_rows"):
        module.plain_max_rows.assign(PLAIN_MAX_ROWS)


class ServedModel:
    """NumPy-in, NumPy-out client of an exported SavedModel (what the CLI commands use).

    It only calls the SavedModel's functions and reads its metadata, so
    whatever works here works for any other client of the export.
    """

    def __init__(self, export_dir: str):
        remote = "://" in export_dir  # gs://... and the like: TensorFlow reads it, os.path cannot check it
        if not remote and not os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
            raise FileNotFoundError(f"no SavedModel at {export_dir!r} (saved_model.pb is missing)")
        self.path = export_dir
        self._module = None
        try:  # the copy in assets/ answers questions about names and ranges without loading TensorFlow
            self.metadata = read_metadata(export_dir)
        except FileNotFoundError:
            self.metadata = json.loads(self.module.metadata()["json"].numpy().decode("utf-8"))
        self.z_dim = int(self.metadata["z_dim"])
        self.codec = MeasureCodec.from_json(self.metadata["vocabulary"])  # the grid and tokens it speaks
        self.maps = self.metadata["attribute_maps"]

    @property
    def module(self):
        """The loaded SavedModel (loaded on first use: it takes seconds)."""
        if self._module is None:
            import tensorflow as tf

            with _without_gradient_warnings():
                module = tf.saved_model.load(self.path)
            if not hasattr(module, "metadata"):
                raise ValueError(f"{self.path!r} is a SavedModel but not a music-attr-vae export (no metadata())")
            self._module = module
        return self._module

    # ------------------------------------------------ names and maps
    def dim_of(self, attribute: str) -> int:
        """Latent dim of a regularised attribute name or of a dim number ("5")."""
        if attribute in self.maps:
            return int(self.maps[attribute]["dim"])
        if str(attribute).isdigit() and int(attribute) < self.z_dim:
            return int(attribute)
        raise ValueError(
            f"unknown attribute {attribute!r}: this model regularises "
            f"{self.describe_regularized()}; or give a latent dim number 0..{self.z_dim - 1}"
        )

    def describe_regularized(self) -> str:
        return ", ".join(f"{n} (dim {m['dim']})" for n, m in self.maps.items()) or "no attribute"

    def require_map(self, attribute: str) -> dict:
        if attribute not in self.maps:
            raise ValueError(
                f"attribute {attribute!r} has no fitted map in this model; regularised: {self.describe_regularized()}"
            )
        return self.maps[attribute]

    def z_for(self, attribute: str, targets) -> tuple:
        """(dim values, clamped targets) that set ``attribute`` to ``targets`` (same math as set_attribute)."""
        fitted = self.require_map(attribute)
        lo, hi = fitted["value"][0], fitted["value"][-1]
        clamped = np.clip(np.asarray(targets, np.float32), lo, hi)
        return np.interp(clamped, fitted["value"], fitted["z"]).astype(np.float32), clamped

    def traversal_values(self, attribute: str, steps: int, default_range=(-3.0, 3.0)) -> np.ndarray:
        """``steps`` dim values from the low to the high end of the attribute's fitted range."""
        if steps < 2:
            raise ValueError("a traversal needs at least 2 steps")
        if attribute in self.maps:
            lo, hi = self.maps[attribute]["z_range"]
        else:
            self.dim_of(attribute)
            lo, hi = default_range
        return np.linspace(lo, hi, steps).astype(np.float32)

    # ------------------------------------------------ limits
    def limit(self, name: str) -> int:
        """A size limit of this export (``LIMITS``; an export older than the limits gets today's)."""
        return int((self.metadata.get("limits") or {}).get(name, LIMITS[name]))

    def check_count(self, count: int, limit_name: str, what: str) -> None:
        """ValueError naming the limit when ``count`` exceeds it, before any work is done."""
        limit = self.limit(limit_name)
        if count > limit:
            raise ValueError(f"{what} = {count} is more than {limit_name} = {limit}, the most one request may ask for")

    # ------------------------------------------------ calls
    def encode(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens, np.int32).reshape(-1, self.codec.ticks_per_measure)
        self.check_count(len(tokens), "MAX_BATCH", "measures")
        return self.module.encode(tokens=tokens)["z_mean"].numpy()

    def encode_distribution(self, tokens) -> tuple:
        """(z_mean, z_log_var) of the measures, each (N, D)."""
        tokens = np.asarray(tokens, np.int32).reshape(-1, self.codec.ticks_per_measure)
        self.check_count(len(tokens), "MAX_BATCH", "measures")
        out = self.module.encode(tokens=tokens)
        return out["z_mean"].numpy(), out["z_log_var"].numpy()

    def has_function(self, name: str) -> bool:
        """Whether the export has the signature ``name`` (an older export may lack teacher_forced_nll)."""
        return name in self.module.signatures

    def teacher_forced_nll(self, tokens) -> tuple:
        """(NLL summed over the 24 ticks, token accuracy), each (N,), decoding from each measure's z_mean."""
        tokens = np.asarray(tokens, np.int32)
        self.check_count(len(tokens), "MAX_BATCH", "measures")
        out = self.module.teacher_forced_nll(tokens=tokens)
        return out["nll"].numpy(), out["accuracy"].numpy()

    def decode(self, z, temperature: float = 0.0, seed: int = 0) -> np.ndarray:
        z = np.asarray(z, np.float32)
        self.check_count(len(z), "MAX_BATCH", "latent codes")
        out = self.module.decode(z=z, temperature=np.float32(temperature), seed=_int32(seed, "seed"))
        return out["tokens"].numpy()

    def sample(self, n: int, seed: int = 0, temperature: float = 0.0):
        self.check_count(int(n), "MAX_SAMPLE", "n")
        out = self.module.sample(n=np.int32(n), seed=_int32(seed, "seed"), temperature=np.float32(temperature))
        return out["tokens"].numpy(), out["z"].numpy()

    def traverse_z(self, z, attribute: str, values, temperature: float = 0.0, seed: int = 0):
        z, values = np.asarray(z, np.float32), np.asarray(values, np.float32).reshape(-1)
        self.check_count(len(values), "MAX_VALUES", "traversal values")
        self.check_count(len(z) * len(values), "MAX_GRID", "measures x traversal values")
        out = self.module.traverse_z(
            z=z,
            attribute=str(attribute),
            values=values,
            temperature=np.float32(temperature),
            seed=_int32(seed, "seed"),
        )
        return out["tokens"].numpy(), out["z"].numpy()

    def reference_measures(self) -> tuple:
        """(tokens (M, 24), attributes (M, 4)): a sample of the measures the maps were fitted on."""
        out = self.module.reference_measures()
        return out["tokens"].numpy(), out["attributes"].numpy()

    def attributes(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens, np.int32)
        self.check_count(len(tokens), "MAX_BATCH", "measures")
        return self.module.attributes(tokens=tokens)["values"].numpy()


INT32_MAX = 2**31 - 1


def _int32(value, what: str) -> np.int32:
    """``value`` as an int32 signature argument; ValueError naming ``what`` outside -2**31..2**31-1."""
    if not -INT32_MAX - 1 <= int(value) <= INT32_MAX:
        raise ValueError(f"{what} = {value} is outside the int32 range -2**31..2**31-1")
    return np.int32(value)
