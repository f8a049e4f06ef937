"""TensorFlow imported without the optional libraries Keras loads on the way.

``import tensorflow`` imports Keras (``tf.keras``), and Keras imports, at
import time and only because they are installed, scikit-learn (its estimator
wrappers), Matplotlib (an image-gallery plot), pandas (DataFrame inputs) and
IPython (a notebook file editor).  None of that is used by a command here,
and on a 2-core machine it is 2.5-3.5 s of every ``music-attr-vae`` command's
start (``python -X importtime``; BUILD_NOTES "Results, 0.9.0").

:func:`install` arranges that while ``tensorflow`` or ``keras``, whichever
is imported first (each imports the other), is being imported those four are
unimportable (a ``None`` entry in ``sys.modules``, which is
how Python spells "not installed"; Keras guards each of these imports and
goes without).  When that import ends the entries are removed, so a
later ``import sklearn`` or ``import matplotlib`` (the evaluation metrics and
figures, note_seq) works as usual.  What stays degraded is only those Keras
integrations, in this process.  Library users who import the package
themselves are not affected: only the CLI calls :func:`install`.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

OPTIONAL = ("sklearn", "matplotlib", "pandas", "IPython")
TARGETS = ("tensorflow", "keras")  # whichever comes first imports the other inside it


class _LeanFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` or ``keras`` as Python would, and runs its import with ``OPTIONAL`` blocked."""

    def find_spec(self, name, path=None, target=None):
        if name not in TARGETS:
            return None
        uninstall()  # once: the real finders answer from here on (and below)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _BlockingLoader(spec.loader)
        return spec


class _BlockingLoader(importlib.abc.Loader):
    """Wraps a module's loader: ``OPTIONAL`` modules not yet imported are blocked while it executes."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = self.loader  # the module keeps its real loader
        blocked = [name for name in OPTIONAL if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None
        try:
            self.loader.exec_module(module)
        finally:
            for name in blocked:
                if name in sys.modules and sys.modules[name] is None:
                    del sys.modules[name]


_finder = _LeanFinder()


def install() -> None:
    """Make the next ``import tensorflow`` or ``import keras`` lean (a no-op once either is imported)."""
    if not any(name in sys.modules for name in TARGETS) and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Undo :func:`install` (TensorFlow imported afterwards imports everything it finds)."""
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
