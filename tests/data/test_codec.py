"""Measures: NoteSequence <-> 24-tick grids, transpositions, tokens, MIDI round trip.

Every test writes its own NoteSequence (times in quarter-note beats at
120 qpm, i.e. 0.5 s per beat) and checks where the notes land on the grid.
"""

from __future__ import annotations

import note_seq
import numpy as np
import pytest
from note_seq.protobuf import music_pb2

from music_attr_vae.data.codec import CODEC, MeasureCodec
from music_attr_vae.serving import render

HOLD, HOLD_MARK, REST, REST_MARK = CODEC.hold, CODEC.HOLD_MARK, CODEC.rest, CODEC.REST_MARK

BEAT_SEC = 0.5


def make_sequence(notes, meters=((0.0, 4, 4),), qpm=120.0):
    """NoteSequence from (pitch, start_beat, end_beat) notes and (beat, num, den) meters."""
    seq = music_pb2.NoteSequence()
    seq.tempos.add(time=0.0, qpm=qpm)
    beat = 60.0 / qpm
    for time, num, den in meters:
        seq.time_signatures.add(time=time * beat, numerator=num, denominator=den)
    for pitch, start, end in notes:
        seq.notes.add(pitch=pitch, start_time=start * beat, end_time=end * beat, velocity=80)
    seq.total_time = max((n[2] for n in notes), default=0.0) * beat
    return seq


def expected_grid(events):
    """A grid from {tick: mark} with HOLD_MARK elsewhere."""
    grid = np.full(CODEC.ticks_per_measure, HOLD_MARK, np.int16)
    for tick, mark in events.items():
        grid[tick] = mark
    return grid


@pytest.mark.parametrize("k,fraction", list(enumerate(CODEC.tick_fractions)))
@pytest.mark.parametrize("beat", [0, 2])
def test_onset_at_each_tick_fraction_lands_on_its_tick(k, fraction, beat):
    # A note on the downbeat, then one at `beat + fraction` lasting to the end of the bar.
    onset = beat + fraction
    notes = [(60, 0.0, onset)] if onset > 0 else []
    notes.append((67, onset, 4.0))
    result = CODEC.to_grids(make_sequence(notes))
    assert result.grids.shape == (1, 24)
    tick = beat * CODEC.ticks_per_beat + k
    assert result.grids[0, tick] == 67
    assert result.grids[0, 0] == (60 if onset > 0 else 67)
    # Everything else continues the sounding note.
    others = [t for t in range(24) if t not in (0, tick)]
    assert np.all(result.grids[0, others] == HOLD_MARK)
    assert not result.dropped


def test_off_grid_onset_drops_only_that_measure():
    notes = [(60, 0.0, 4.0), (62, 4.0, 4.125), (64, 4.125, 8.0), (65, 8.0, 12.0)]  # 1/8-beat onset in bar 1
    result = CODEC.to_grids(make_sequence(notes))
    assert result.dropped == {"off_grid_onset": 1}
    assert result.measure_indices.tolist() == [0, 2]
    assert result.grids[:, 0].tolist() == [60, 65]


def test_tie_over_barline_is_struck_again_on_tick_zero():
    # 72 sounds from beat 3 to beat 5 (one beat into bar 1), then silence to the end of bar 1.
    notes = [(60, 0.0, 3.0), (72, 3.0, 5.0), (64, 7.0, 8.0)]
    result = CODEC.to_grids(make_sequence(notes))
    assert result.grids.shape == (2, 24)
    np.testing.assert_array_equal(result.grids[0], expected_grid({0: 60, 18: 72}))
    np.testing.assert_array_equal(result.grids[1], expected_grid({0: 72, 6: REST_MARK, 18: 64}))


def test_rest_marks_the_first_silent_tick_and_a_silent_downbeat():
    # Bar 0: quarter note, quarter rest, half note.  Bar 1: starts with an eighth rest.
    notes = [(60, 0.0, 1.0), (62, 2.0, 4.0), (64, 4.5, 5.0), (65, 5.0, 8.0)]
    result = CODEC.to_grids(make_sequence(notes))
    np.testing.assert_array_equal(result.grids[0], expected_grid({0: 60, 6: REST_MARK, 12: 62}))
    np.testing.assert_array_equal(result.grids[1], expected_grid({0: REST_MARK, 3: 64, 6: 65}))


def test_chords_keep_the_highest_pitch():
    notes = [(60, 0.0, 2.0), (67, 0.0, 2.0), (64, 0.0, 2.0), (55, 2.0, 4.0), (59, 2.0, 4.0)]
    result = CODEC.to_grids(make_sequence(notes))
    np.testing.assert_array_equal(result.grids[0], expected_grid({0: 67, 12: 59}))


def test_a_bar_without_notes_is_dropped_as_empty():
    notes = [(60, 0.0, 4.0), (62, 8.0, 12.0)]
    result = CODEC.to_grids(make_sequence(notes))
    assert result.dropped == {"empty": 1}
    assert result.measure_indices.tolist() == [0, 2]


def test_non_four_four_bars_are_dropped_and_counted():
    # Two bars of 3/4 (6 beats), then two bars of 4/4 (8 beats).
    notes = [(60 + i, float(i), float(i + 1)) for i in range(14)]
    seq = make_sequence(notes, meters=((0.0, 3, 4), (6.0, 4, 4)))
    result = CODEC.to_grids(seq)
    assert result.dropped == {"not_4_4": 2}
    assert result.measure_indices.tolist() == [2, 3]
    assert result.grids[:, 0].tolist() == [66, 70]


def test_two_two_and_six_eight_meters():
    notes = [(60 + i, float(i), float(i + 1)) for i in range(4)]
    kept = CODEC.to_grids(make_sequence(notes, meters=((0.0, 2, 2),)))
    assert kept.grids.shape == (1, 24) and not kept.dropped
    jig = CODEC.to_grids(make_sequence(notes + [(70, 4.0, 6.0)], meters=((0.0, 6, 8),)))
    assert jig.grids.shape == (0, 24)
    assert jig.dropped == {"not_4_4": 2}  # 6 beats of 6/8 bars of 3 quarter beats


def test_valid_shifts_keep_every_note_in_range():
    grids = np.stack([expected_grid({0: 60, 12: 72}), expected_grid({0: REST_MARK, 6: 65})])
    assert CODEC.valid_shifts(grids, 12) == list(range(-5, 13))
    assert CODEC.valid_shifts(grids, 3) == [-3, -2, -1, 0, 1, 2, 3]
    assert CODEC.valid_shifts(grids, 0) == [0]
    high = expected_grid({0: 80, 6: 84})
    assert CODEC.valid_shifts(high[None], 12) == list(range(-12, 1))
    # A tune wider than the vocabulary fits no shift; an all-rest stack has no notes.
    assert CODEC.valid_shifts(expected_grid({0: 50, 6: 86})[None], 12) == []
    assert CODEC.valid_shifts(expected_grid({0: REST_MARK})[None], 12) == []


def test_grids_to_tokens_maps_marks_and_refuses_out_of_range_shifts():
    grid = expected_grid({0: 60, 6: REST_MARK, 12: 84})[None]
    tokens = CODEC.grids_to_tokens(grid, shift=0)
    assert tokens[0, 0] == 60 - CODEC.min_pitch
    assert tokens[0, 6] == REST and tokens[0, 1] == HOLD and tokens[0, 12] == 29
    assert CODEC.grids_to_tokens(grid, shift=-5)[0, 0] == 0
    with pytest.raises(ValueError, match=r"\+1"):
        CODEC.grids_to_tokens(grid, shift=1)


def _tokens(*events_per_measure):
    rows = []
    for events in events_per_measure:
        row = np.full(24, HOLD, np.int32)
        for tick, tok in events.items():
            row[tick] = tok
        rows.append(row)
    return np.stack(rows)


def test_tokens_to_sequence_round_trip():
    tokens = _tokens(
        {0: 5, 2: 7, 4: 9, 6: REST, 12: 29, 15: 0, 18: 12, 21: REST},
        {0: REST, 1: 14, 3: 16, 5: 17, 9: 19, 13: 20, 20: 3},
        {0: 3, 12: REST},
    )
    seq = CODEC.to_sequence(tokens)
    assert len(seq.notes) == 13
    back = CODEC.to_grids(seq)
    assert back.measure_indices.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(CODEC.grids_to_tokens(back.grids), tokens)


def test_hold_on_tick_zero_is_read_as_a_tie():
    tokens = _tokens({0: 10, 12: 12}, {6: 14})  # HOLD on tick 0 of bar 1 continues pitch 12
    seq = CODEC.to_sequence(tokens)
    tied = [n for n in seq.notes if n.pitch == CODEC.min_pitch + 12]
    assert len(tied) == 1
    assert tied[0].start_time == pytest.approx(2 * BEAT_SEC)
    assert tied[0].end_time == pytest.approx(5 * BEAT_SEC)
    # Read back, the tie is re-struck on tick 0 (every measure is self-contained).
    grids = CODEC.to_grids(seq).grids
    assert CODEC.grids_to_tokens(grids)[1, 0] == 12


def test_midi_file_written_and_read_back(tmp_path):
    tokens = _tokens({0: 5, 3: 7, 6: 9, 8: 10, 10: 12, 12: REST, 18: 24}, {0: 24, 6: 22, 12: 20, 16: 19, 20: 17})
    path = tmp_path / "two_bars.mid"
    render.write_midi(tokens, str(path))
    assert path.stat().st_size > 0
    assert not list(tmp_path.glob("*.tmp"))
    seq = note_seq.midi_file_to_note_sequence(str(path))
    assert [ts.numerator for ts in seq.time_signatures] == [4]
    assert seq.tempos[0].qpm == pytest.approx(120.0)
    back = CODEC.to_grids(seq)
    np.testing.assert_array_equal(CODEC.grids_to_tokens(back.grids), tokens)


def test_check_tokens_rejects_bad_shapes_and_values():
    assert CODEC.check_tokens(np.full(24, HOLD)).shape == (1, 24)
    with pytest.raises(ValueError, match="shape"):
        CODEC.check_tokens(np.zeros((2, 23), np.int32))
    with pytest.raises(ValueError, match="0..31"):
        CODEC.check_tokens(np.full((1, 24), 32))


def test_vocabulary_names_every_token():
    vocab = CODEC.to_json()
    assert vocab["size"] == 32 and len(vocab["tokens"]) == 32
    assert vocab["tokens"][0] == "55" and vocab["tokens"][29] == "84"
    assert vocab["tokens"][REST] == "REST" and vocab["tokens"][HOLD] == "HOLD"


def test_codec_json_round_trip_and_mismatch():
    data = CODEC.to_json()
    assert MeasureCodec.from_json(data) == CODEC
    assert data["tokens"][CODEC.rest] == "REST" and len(data["tokens"]) == CODEC.vocab_size == 32
    wider = MeasureCodec(48, 96)
    assert (wider.num_pitches, wider.rest, wider.hold, wider.vocab_size) == (49, 49, 50, 51)
    assert MeasureCodec.from_json(wider.to_json()) == wider
    with pytest.raises(ValueError, match="ticks_per_measure=16"):
        MeasureCodec.from_json(dict(data, ticks_per_measure=16))
    with pytest.raises(ValueError, match="MIDI 0..127"):
        MeasureCodec(80, 60)


def test_transpose_in_the_token_domain_matches_the_grid_domain():
    notes = [(60, 0.0, 1.0), (64, 1.0, 2.5), (67, 3.0, 4.0)]
    grids = CODEC.to_grids(make_sequence(notes)).grids
    base = CODEC.grids_to_tokens(grids)
    for shift in CODEC.valid_shifts(grids):
        np.testing.assert_array_equal(CODEC.transpose(base, shift), CODEC.grids_to_tokens(grids, shift))
    with pytest.raises(ValueError, match=r"transposition \+30"):
        CODEC.transpose(base, 30)


def test_to_sequence_transposes_and_ties_across_barlines():
    row = np.full(24, HOLD, np.int32)
    row[0] = 5  # MIDI 60 on the downbeat, held to the end of the bar
    tied = np.stack([row, np.full(24, HOLD, np.int32)])  # ... and through the next bar
    seq = CODEC.to_sequence(tied, transpose=-3)
    assert [(n.pitch, n.start_time, n.end_time) for n in seq.notes] == [(57, 0.0, 4.0)]  # one note, 2 bars at 120 qpm
    assert seq.total_time == 4.0
