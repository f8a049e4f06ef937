"""``music-attr-vae generate``: traversal files and their JSON, from a SavedModel."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import note_seq
import numpy as np

from music_attr_vae.serving import export
from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import CODEC
from serving_helpers import canonical, notes_in_beats, read_abc_tokens

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generate(*flags):
    return subprocess.run([sys.executable, "-m", "music_attr_vae", "generate", *flags],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_generate_writes_midi_abc_png_and_json(quick_workdir, tmp_path):
    saved = quick_workdir / "saved_model"
    meta = export.read_metadata(str(saved))
    name = next(iter(meta["attribute_maps"]))
    fitted = meta["attribute_maps"][name]
    out = tmp_path / "gen"
    proc = _generate(f"--saved_model={saved}", f"--attribute={name}", "--steps=6", "--num_traversals=2",
                     "--seed=3", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "traversal.abc", "traversal.json", "traversal.mid", "traversal.png"]
    doc = json.loads((out / "traversal.json").read_text())
    assert doc["attribute"] == name and doc["dim"] == fitted["dim"] and doc["seed"] == 3
    np.testing.assert_allclose(doc["values"], np.linspace(*fitted["z_range"], 6), atol=1e-5)
    assert len(doc["traversals"]) == 2
    rows = []
    for traversal in doc["traversals"]:
        tokens = np.array([m["tokens"] for m in traversal["measures"]])
        assert tokens.shape == (6, 24)
        CODEC.check_tokens(tokens)
        got = np.array([[m["attributes"][n] for n in attrs.ATTRIBUTE_NAMES] for m in traversal["measures"]])
        np.testing.assert_allclose(got, attrs.compute_all(tokens), atol=1e-6)
        rising = np.mean(np.diff(got[:, attrs.attribute_index(name)]) > 0)
        assert traversal["rising_steps"] == rising
        rows.append(tokens)
    all_tokens = np.concatenate(rows)
    midi = note_seq.midi_file_to_note_sequence(str(out / "traversal.mid"))
    assert notes_in_beats(midi) == notes_in_beats(CODEC.to_sequence(all_tokens))
    tunes = (out / "traversal.abc").read_text().split("\n\n")
    assert len(tunes) == 2
    for text, tokens in zip(tunes, rows):
        result, back = read_abc_tokens(text)
        expected = canonical(tokens)
        np.testing.assert_array_equal(back, expected[result.measure_indices])
    assert (out / "traversal.png").read_bytes()[:4] == b"\x89PNG"



def test_generate_rejects_bad_flags(quick_workdir, tmp_path):
    saved = quick_workdir / "saved_model"
    proc = _generate(f"--saved_model={saved}", "--attribute=loudness", f"--out={tmp_path}")
    assert proc.returncode == 2 and "--attribute=loudness" in proc.stderr and "regularises" in proc.stderr
    proc = _generate(f"--saved_model={tmp_path / 'nowhere'}", "--attribute=0", f"--out={tmp_path}")
    assert proc.returncode == 2 and "--saved_model=" in proc.stderr


def test_generate_module_leaves_scikit_learn_unimported():
    """`generate` uses only the traversal statistics of evaluation.metrics; scikit-learn costs it ~1 s."""
    code = ("import sys; import music_attr_vae.serving.generate, music_attr_vae.evaluation.metrics; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
