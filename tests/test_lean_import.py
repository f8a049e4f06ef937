"""lean_import: TensorFlow imported by the CLI leaves out what Keras would load only because it is installed."""

import subprocess
import sys

import pytest

from music_attr_vae import lean_import

PROGRAM = """
import sys
{setup}
import {first}
import tensorflow as tf
import keras
print("during", sorted(name for name in {optional!r} if sys.modules.get(name) is not None))
print("sentinels", sorted(name for name in {optional!r} if name in sys.modules and sys.modules[name] is None))
print("loader", type(tf.__spec__.loader).__name__)
import sklearn.metrics, matplotlib.figure, pandas
print("after", sklearn.metrics.r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), pandas.DataFrame({{"a": [1]}}).shape)
"""


def _printed(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; its printed ``key value`` lines as a dict."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines() if " " in line}


def _run(setup: str, first: str = "tensorflow") -> dict:
    return _printed(PROGRAM.format(setup=setup, first=first, optional=lean_import.OPTIONAL))


@pytest.fixture(scope="module", params=["tensorflow", "keras"])
def installed(request):
    # each imports the other: whichever the program imports first, the window covers both
    return _run("from music_attr_vae import lean_import\nlean_import.install()", first=request.param)


def test_plain_import_loads_the_optional_libraries():
    # the reason for the module: without it, importing TensorFlow imports them (they are installed here)
    out = _run("")
    assert out["during"] == str(sorted(lean_import.OPTIONAL))


def test_install_keeps_them_out_and_leaves_no_trace(installed):
    assert installed["during"] == "[]"
    assert installed["sentinels"] == "[]"  # the blocking entries are gone once TensorFlow is imported
    assert installed["loader"] == "SourceFileLoader"  # the module keeps its real loader


def test_they_import_normally_afterwards(installed):
    assert installed["after"] == "1.0 (1, 1)"


def test_install_is_a_no_op_once_tensorflow_and_note_seq_are_imported():
    import note_seq  # noqa: F401 - the test process has them already, or imports them now
    import tensorflow  # noqa: F401

    before = list(sys.meta_path)
    lean_import.install()
    assert sys.meta_path == before


CLI_PROGRAM = """
import importlib, sys
from music_attr_vae import cli
real = importlib.import_module
def import_module(name):  # Keras first, as `train` does when its config file loads the model modules
    import keras
    return real(name)
cli.importlib.import_module = import_module
cli.main(["music-attr-vae", "evaluate", "--help"])
print("loaded", sorted(name for name in {optional!r} if sys.modules.get(name) is not None))
import note_seq
print("note_seq", "bokeh" in sys.modules, type(note_seq.notebook_utils.__spec__.loader).__name__)
"""


def test_the_cli_installs_it_before_a_subcommand_imports_tensorflow():
    code = CLI_PROGRAM.format(optional=lean_import.OPTIONAL)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage: music-attr-vae evaluate" in proc.stdout
    assert proc.stdout.splitlines()[-2] == "loaded []"
    assert proc.stdout.splitlines()[-1] == "note_seq False _StandInLoader"


NOTE_SEQ_PROGRAM = """
import sys
{setup}
import note_seq
HEAVY = ("bokeh", "pandas", "IPython")
print("after_import", sorted(name for name in HEAVY if name in sys.modules))
print("stand_in", type(sys.modules["note_seq.notebook_utils"].__spec__.loader).__name__)
calls = []
def synth(sequence, sample_rate):
    calls.append((len(sequence.notes), sample_rate))
    return [0.0] * 16
sequence = note_seq.NoteSequence()
sequence.notes.add(pitch=60, start_time=0.0, end_time=0.5, velocity=80)
note_seq.play_sequence(sequence, synth=synth, sample_rate=8000)  # the helper note_seq's namespace holds
print("forwarded", calls)
print("after_use", sorted(name for name in HEAVY if name in sys.modules))
real = sys.modules["note_seq.notebook_utils"]
print("real", type(real.__spec__.loader).__name__, note_seq.notebook_utils is real, real._DEFAULT_SAMPLE_RATE)
"""


def test_note_seq_imports_without_its_notebook_libraries_until_they_are_used():
    plain = _printed(NOTE_SEQ_PROGRAM.format(setup=""))
    assert plain["after_import"] == "['IPython', 'bokeh', 'pandas']"  # why: note_seq imports them itself
    assert plain["stand_in"] == "SourceFileLoader"
    lean = _printed(NOTE_SEQ_PROGRAM.format(
        setup="from music_attr_vae import lean_import\nlean_import.install()\nimport tensorflow"))
    assert lean["after_import"] == "[]"
    assert lean["stand_in"] == "_StandInLoader"
    # the first use imports the real module and runs the real helper with the caller's arguments
    assert lean["forwarded"] == plain["forwarded"] == "[(1, 8000)]"
    assert lean["after_use"] == "['IPython', 'bokeh', 'pandas']"
    assert lean["real"] == "SourceFileLoader True 44100"
