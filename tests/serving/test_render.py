"""render.py: ABC text reads back to the same measures, MIDI and piano rolls are faithful."""

from __future__ import annotations

import fractions

import music21
import note_seq
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from music_attr_vae.serving import abc_writer, render
from music_attr_vae.data import abc_reader
from music_attr_vae.data.codec import CODEC
from serving_helpers import canonical, notes_in_beats, read_abc_tokens

HOLD, REST = CODEC.hold, CODEC.rest


def token_measures():
    """Random measures: mostly holds, some rests, onsets anywhere in 55..84."""
    token = st.one_of(
        st.just(HOLD), st.just(HOLD), st.just(REST), st.integers(0, CODEC.num_pitches - 1)
    )
    return st.integers(1, 4).flatmap(
        lambda n: st.lists(token, min_size=24 * n, max_size=24 * n).map(lambda v: np.array(v).reshape(n, 24))
    ).filter(lambda a: (a < CODEC.num_pitches).any())  # a tune needs a note


def corpus_tokens(nottingham_dir, book="reelsu-z.abc", limit=40) -> np.ndarray:
    """Real 4/4 measures of the corpus, as tokens."""
    text = (nottingham_dir / book).read_text(encoding="utf-8", errors="replace")
    grids = []
    for i, tune in enumerate(abc_reader.split_abc_book(text)):
        try:
            seq = abc_reader.abc_tune_to_sequence(tune, origin=book, index=i)
        except abc_reader.SkipTune:
            continue
        for grid in CODEC.to_grids(seq).grids:
            shifts = CODEC.valid_shifts(grid[None], 12)
            if shifts:
                grids.append(CODEC.grids_to_tokens(grid, 0 if 0 in shifts else shifts[0]))
        if len(grids) >= limit:
            break
    assert len(grids) >= 10, "too few corpus measures parsed"
    return np.stack(grids[:limit]).astype(np.int32)


def read_back_with_reader(abc: str):
    return read_abc_tokens(abc)


def music21_notes(score):
    """(start, end, pitch) in beats with tied notes joined (stripTies misses some tie chains)."""
    notes = []
    for n in sorted(score.flatten().notes, key=lambda n: n.offset):
        start, end = float(n.offset), float(n.offset + n.quarterLength)
        prev = notes[-1] if notes else None
        if prev and prev[3] and prev[2] == n.pitch.midi and abs(prev[1] - start) < 1e-6:
            notes[-1] = [prev[0], end, prev[2], n.tie is not None and n.tie.type != "stop"]
        else:
            notes.append([start, end, n.pitch.midi, n.tie is not None and n.tie.type != "stop"])
    return sorted((round(a, 6), round(b, 6), p) for a, b, p, _ in notes)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_measures(), st.sampled_from(["C", "G", "D", "A", "F", "Bb", "Eb", "C#", "Cb", "auto"]))
def test_abc_reads_back_in_music21(tokens, key):
    abc = abc_writer.tokens_to_abc(tokens, title="random measures", key=key)
    score = music21.converter.parse(abc, format="abc")
    assert music21_notes(score) == notes_in_beats(CODEC.to_sequence(tokens))
    total = fractions.Fraction(score.flatten().highestTime).limit_denominator(48)
    assert total == 4 * tokens.shape[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token_measures(), st.sampled_from(["C", "D", "Bb", "F#", "Ab", "auto"]))
def test_abc_reads_back_with_project_reader(tokens, key):
    result, got = read_back_with_reader(abc_writer.tokens_to_abc(tokens, key=key))
    expected = canonical(tokens)
    audible = [m for m in range(len(expected)) if (expected[m] < CODEC.num_pitches).any()]
    assert result.measure_indices.tolist() == audible
    np.testing.assert_array_equal(got, expected[audible])


def test_real_measures_read_back(nottingham_dir):
    tokens = corpus_tokens(nottingham_dir)
    abc = abc_writer.tokens_to_abc(tokens, title="corpus measures")
    assert abc.startswith("X:1\nT:corpus measures\nM:4/4\nL:1/16\n")
    _, got = read_back_with_reader(abc)
    np.testing.assert_array_equal(got, canonical(tokens))


def test_ties_accidentals_and_triplets_are_spelled():
    p = lambda midi: midi - CODEC.min_pitch  # noqa: E731
    bar1 = [p(66), HOLD, HOLD, p(65), HOLD, HOLD] + [p(70), HOLD, HOLD, HOLD, HOLD, HOLD] + [
        p(60), HOLD, p(62), HOLD, p(64), HOLD] + [p(72)] + [HOLD] * 5
    bar2 = [HOLD] * 6 + [REST] + [HOLD] * 5 + [p(60)] + [HOLD] * 11
    abc = abc_writer.tokens_to_abc(np.array([bar1, bar2]), key="C")
    body = abc.strip().splitlines()[-1]
    # F# then F natural in the same bar needs an explicit natural; the c' tie crosses the barline.
    assert body.startswith("^F2 =F2 ^A4 (3C2D2E2 c4- | c4 z4 C8 |]"), body


def test_unsupported_key_is_rejected():
    with pytest.raises(ValueError, match="unsupported key"):
        abc_writer.tokens_to_abc(np.full((1, 24), HOLD), key="H")


def test_midi_matches_tokens(tmp_path):
    tokens = np.array([[p for p in range(0, 24)], [HOLD] * 12 + [REST] + [HOLD] * 11])
    path = tmp_path / "m.mid"
    render.write_midi(tokens, str(path))
    seq = note_seq.midi_file_to_note_sequence(str(path))
    assert notes_in_beats(seq) == notes_in_beats(CODEC.to_sequence(tokens))


def test_piano_roll_draws_every_note_and_rest(tmp_path):
    from matplotlib import patches
    from matplotlib.figure import Figure

    p = lambda midi: midi - CODEC.min_pitch  # noqa: E731
    held = [p(67)] + [HOLD] * 11 + [REST] + [HOLD] * 5 + [p(72)] + [HOLD] * 5
    tied = [HOLD] * 6 + [p(64)] + [HOLD] * 17
    restruck = [p(64)] + [HOLD] * 23  # the E4 of bar 2, struck again
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    render.draw_piano_roll(ax, np.array([held, tied, restruck]), title="three bars")
    rects = [a for a in ax.patches if isinstance(a, patches.Rectangle)]
    notes = [r for r in rects if r.get_facecolor()[:3] == pytest.approx((0.12, 0.47, 0.71), abs=0.01)]
    stripes = [r for r in rects if r.get_facecolor()[:3] == pytest.approx((0.0, 0.0, 0.5), abs=0.01)]
    rests = [r for r in rects if r.get_hatch()]
    # Notes: G4, C5, (C5 tied on), E4, E4 struck again = 5 bars; 4 onsets (the tie has no stripe).
    assert len(notes) == 5 and len(stripes) == 4 and len(rests) == 1
    assert ax.get_title() == "three bars"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bar 1", "bar 2", "bar 3"]

    out = tmp_path / "roll.png"
    render.save_piano_roll_png(np.array([held, tied]), str(out), title="x")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f.name for f in tmp_path.iterdir()] == ["roll.png"]  # no temp files left behind
