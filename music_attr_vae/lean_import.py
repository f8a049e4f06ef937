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

:func:`install` also defers ``note_seq.notebook_utils``.  ``import note_seq``
imports it for two notebook helpers (``play_sequence``, ``plot_sequence``),
and it imports bokeh, pandas and IPython: 1.4 s of 1.8 s of note_seq's
import, paid by every command that reads or writes music.  In its place
``note_seq`` gets a module whose two helpers, and any other attribute, import
the real one when first used.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

OPTIONAL = ("sklearn", "matplotlib", "pandas", "IPython")
TARGETS = ("tensorflow", "keras")  # whichever comes first imports the other inside it
# module -> the names its importers take from it at import time (forwarded until first used)
DEFERRED = {"note_seq.notebook_utils": ("play_sequence", "plot_sequence")}


class _LeanFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` or ``keras`` as Python would, and runs its import with ``OPTIONAL`` blocked."""

    def find_spec(self, name, path=None, target=None):
        if name not in TARGETS:
            return None
        if self in sys.meta_path:  # once: the real finders answer from here on (and below)
            sys.meta_path.remove(self)
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


class _DeferringFinder(importlib.abc.MetaPathFinder):
    """Answers for the ``DEFERRED`` modules with a stand-in that imports the real module when used."""

    real = set()  # names being imported for real: the other finders answer for them

    def find_spec(self, name, path=None, target=None):
        if name not in DEFERRED or name in self.real:
            return None
        return importlib.util.spec_from_loader(name, _StandInLoader())


class _StandInLoader(importlib.abc.Loader):
    """Makes the stand-in: the ``DEFERRED`` names forward their calls, other attributes import the real module."""

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        name = module.__name__

        def forward(attr):
            def call(*args, **kwargs):
                return getattr(_real(name), attr)(*args, **kwargs)
            call.__name__ = call.__qualname__ = attr
            call.__doc__ = f"Imports {name} and calls its {attr} (see music_attr_vae.lean_import)."
            return call

        for attr in DEFERRED[name]:
            setattr(module, attr, forward(attr))

        def other(attr):
            if attr.startswith("__"):  # the import system probes __path__ and the like: not a use
                raise AttributeError(attr)
            return getattr(_real(name), attr)

        module.__getattr__ = other


def _real(name: str):
    """The real module ``name``, imported on first use in place of its stand-in."""
    module = sys.modules.get(name)
    if module is not None and not isinstance(module.__spec__.loader, _StandInLoader):
        return module
    _DeferringFinder.real.add(name)
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        _DeferringFinder.real.discard(name)


_finder = _LeanFinder()
_deferring = _DeferringFinder()


def install() -> None:
    """Make the next ``import tensorflow`` or ``import keras`` lean (a no-op once either is imported),
    and defer the ``DEFERRED`` modules not imported yet."""
    if not any(name in sys.modules for name in TARGETS) and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    if not any(name in sys.modules for name in DEFERRED) and _deferring not in sys.meta_path:
        sys.meta_path.insert(0, _deferring)


def uninstall() -> None:
    """Undo :func:`install` (TensorFlow imported afterwards imports everything it finds; deferred
    modules already replaced by stand-ins still import the real module when used)."""
    for finder in (_finder, _deferring):
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)
