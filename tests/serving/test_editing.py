"""Whole-tune editing: only the chosen bars change, outputs are faithful, bad requests fail clearly."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import note_seq
import numpy as np
import pytest

from music_attr_vae.serving import client, editing, export
from music_attr_vae.data import abc_reader
from music_attr_vae.data.codec import CODEC
from serving_helpers import canonical, notes_in_beats, read_abc_tokens

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BOOK = "reelsu-z.abc"  # tune 0, "Up Jumped The Devil": a pickup, 32 full bars in 4/4


@pytest.fixture(scope="module")
def served(quick_workdir):
    return client.ServedModel(str(quick_workdir / "saved_model"))


@pytest.fixture(scope="module")
def tune(nottingham_dir):
    return editing.load_tune(str(nottingham_dir / BOOK), 0)


def test_tune_is_read_whole_with_musicians_bar_numbers(tune, nottingham_dir):
    text = abc_reader.split_abc_book((nottingham_dir / BOOK).read_text())[0]
    _, direct = read_abc_tokens(text, tune.shift)
    assert tune.title == "Up Jumped The Devil"
    assert tune.first_number == 0  # the tune opens with a pickup: bar 0
    np.testing.assert_array_equal(tune.tokens, direct)
    assert len(tune.tokens) == 33 and tune.numbers[1] == 1


def test_bar_and_setting_requests(tune, served):
    assert [int(tune.numbers[r]) for r in editing.parse_measures("5-8", tune)] == [5, 6, 7, 8]
    assert editing.parse_measures("1,3, 6-7", tune) == [1, 3, 6, 7]
    for bad in ("33-40", "x", "8-5", ""):
        with pytest.raises(editing.EditError, match="--measures"):
            editing.parse_measures(bad, tune)
    name = next(iter(served.maps))
    settings = editing.parse_settings([f"{name}=0.8"], list(served.maps))
    assert str(settings[0]) == f"{name}=0.8"
    assert editing.parse_settings([f"{name}+=0.1"], list(served.maps))[0].targets(np.array([0.2])) == pytest.approx(0.3)
    for bad in ("loudness=1", f"{name}=abc", f"{name}~1", f"{name}=nan"):
        with pytest.raises(editing.EditError, match="--set"):
            editing.parse_settings([bad], list(served.maps))
    with pytest.raises(editing.EditError, match="set twice"):
        editing.parse_settings([f"{name}=0.1", f"{name}+=0.1"], list(served.maps))


def test_edit_changes_only_the_chosen_bars(tune, served, tmp_path):
    name = next(iter(served.maps))
    target = float(np.mean(served.maps[name]["value_range"]))
    rows = editing.parse_measures("5-8", tune)
    result = editing.edit_tune(served, tune, rows, editing.parse_settings([f"{name}={target}"], list(served.maps)))
    others = np.setdiff1d(np.arange(len(tune.tokens)), rows)
    np.testing.assert_array_equal(result.after[others], tune.tokens[others])
    # The chosen bars are exactly what the SavedModel's own set_attribute gives.
    direct = served.module.set_attribute(
        tokens=tune.tokens[rows], attribute=name, target=np.float32(target), temperature=np.float32(0), seed=np.int32(0)
    )
    np.testing.assert_array_equal(result.after[rows], direct["tokens"].numpy())

    paths = editing.write_outputs(str(tmp_path), tune, result)
    report = json.loads(pathlib.Path(paths["report"]).read_text())
    assert report["edited_bars"] == [5, 6, 7, 8]
    assert [b["bar"] for b in report["bars"]] == list(range(33))
    for bar, row in zip(report["bars"], range(len(tune.tokens))):
        assert bar["edited"] == (row in rows)
        assert bar["tokens_after"] == result.after[row].tolist()
        if bar["edited"]:
            assert bar["targets"][name] == pytest.approx(target)

    # The ABC and MIDI files hold the tune in its own key, edited bars included.
    _, from_abc = read_abc_tokens(pathlib.Path(paths["edited_abc"]).read_text(), tune.shift)
    np.testing.assert_array_equal(from_abc, canonical(result.after))
    _, original = read_abc_tokens(pathlib.Path(paths["original_abc"]).read_text(), tune.shift)
    np.testing.assert_array_equal(original, tune.tokens)
    midi = note_seq.midi_file_to_note_sequence(paths["edited_midi"])
    assert notes_in_beats(midi) == notes_in_beats(CODEC.to_sequence(result.after, transpose=-tune.shift))
    assert pathlib.Path(paths["picture"]).read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_tune_out_of_range_is_transposed_and_back(served, tmp_path):
    """A tune written an octave below the vocabulary range is moved up to encode, and back on output."""
    low = "X:1\nT:Low tune\nM:4/4\nL:1/8\nK:G\nG,,A,,B,,C, D,E,F,G, | G,,2 B,,2 D,4 | G,,8 |]\n"
    path = tmp_path / "low.abc"
    path.write_text(low)
    tune = editing.load_tune(str(path))
    assert tune.shift > 0 and tune.first_number == 1
    name = next(iter(served.maps))
    result = editing.edit_tune(served, tune, [1], editing.parse_settings([f"{name}+=0.2"], list(served.maps)))
    paths = editing.write_outputs(str(tmp_path / "out"), tune, result)
    seq = abc_reader.abc_tune_to_sequence(pathlib.Path(paths["original_abc"]).read_text())
    assert notes_in_beats(seq) == notes_in_beats(abc_reader.abc_tune_to_sequence(low))


def test_edit_command_line(nottingham_dir, quick_workdir, tmp_path):
    saved = quick_workdir / "saved_model"
    name = next(iter(export.read_metadata(str(saved))["attribute_maps"]))
    out = tmp_path / "edit"
    base = [sys.executable, "-m", "music_attr_vae", "edit", f"--saved_model={saved}",
            f"--tune={nottingham_dir / BOOK}", "--tune_index=0"]
    proc = subprocess.run(base + ["--measures=2-3", f"--set={name}+=0.2", f"--out={out}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "before_after.png", "edited.abc", "edited.mid", "original.abc", "original.mid", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["edited_bars"] == [2, 3] and "bar 2:" in proc.stdout
    for bar in report["bars"]:
        if not bar["edited"]:
            assert bar["tokens_after"] == bar["tokens_before"]

    bad = subprocess.run(base + ["--measures=40-41", f"--set={name}=0.5", f"--out={out}"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--measures=40-41" in bad.stderr and "0..32" in bad.stderr
    many = subprocess.run(base[:-1] + ["--measures=1", f"--set={name}=0.5", f"--out={out}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert many.returncode == 2 and "--tune_index" in many.stderr
