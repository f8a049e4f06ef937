"""ABC and folk-rnn reader: one construct at a time, comparing note lists.

Notes are compared as (MIDI pitch, start beat, end beat) with beats = quarter
notes (the reader's tempo is 120 qpm, so a beat is 0.5 s).
"""

from __future__ import annotations

import collections
import pickle

import pytest

from music_attr_vae.data import abc_reader

from music_attr_vae.data.codec import CODEC
from music_attr_vae.data.abc_reader import SkipTune

C4, D4, E4, F4, G4, A4, B4 = 60, 62, 64, 65, 67, 69, 71
C5, D5, E5, F5, G5 = 72, 74, 76, 77, 79


def tune(body: str, *, M: str = "4/4", L: str = "1/4", K: str = "C", header: str = "") -> str:
    lines = ["X:1", "T:Test tune"]
    if M is not None:
        lines.append(f"M:{M}")
    if L is not None:
        lines.append(f"L:{L}")
    lines += [h for h in header.splitlines() if h]
    lines.append(f"K:{K}")
    return "\n".join(lines) + "\n" + body.strip("\n") + "\n"


def notes_of(seq):
    out = []
    for n in sorted(seq.notes, key=lambda n: n.start_time):
        out.append((n.pitch, round(n.start_time / 0.5, 6), round(n.end_time / 0.5, 6)))
    return out


def read(body: str, **kw):
    return notes_of(abc_reader.abc_tune_to_sequence(tune(body, **kw)))


def line(pitches, durations, start=0.0):
    """Consecutive notes: [(pitch, start, end), ...]."""
    out, t = [], start
    for p, d in zip(pitches, durations):
        if p is not None:
            out.append((p, round(t, 6), round(t + d, 6)))
        t += d
    return out


def pitches(body: str, **kw):
    return [p for p, _, _ in read(body, **kw)]


# ----------------------------------------------------------------------------- lengths


def test_unit_length_field_sets_note_lengths():
    assert read("C D E F|", L="1/4") == line([C4, D4, E4, F4], [1, 1, 1, 1])
    assert read("C D E F G A B c|", L="1/8") == line([C4, D4, E4, F4, G4, A4, B4, C5], [0.5] * 8)
    assert read("C4 D4|", L="1/16") == line([C4, D4], [1, 1])


@pytest.mark.parametrize("meter,unit", [("4/4", 0.5), ("6/8", 0.5), ("3/4", 0.5), ("2/4", 0.25), ("C", 0.5), ("3/8", 0.25)])
def test_default_unit_length_follows_the_meter(meter, unit):
    got = read("C D", M=meter, L=None)
    assert [e - s for _, s, e in got] == [unit, unit]


def test_note_length_forms():
    got = read("C2 D/2 E/ F// G3/2 A3/ B//2 z/2|", L="1/4")
    durations = [e - s for _, s, e in got]
    assert durations == [2, 0.5, 0.5, 0.25, 1.5, 1.5, 0.25]


def test_broken_rhythm():
    assert read("C>D E<F G>>A B<<c|", L="1/8") == line(
        [C4, D4, E4, F4, G4, A4, B4, C5], [0.75, 0.25, 0.25, 0.75, 0.875, 0.125, 0.125, 0.875])
    # with lengths and spaces around the mark
    assert read("C2 > D2|", L="1/8") == line([C4, D4], [1.5, 0.5])


# ----------------------------------------------------------------------------- pitch


def test_octaves():
    assert pitches("C, C c c' C,, c'' B,|") == [48, 60, 72, 84, 36, 96, 59]


def test_accidentals_carry_to_the_end_of_the_bar_for_the_same_octave():
    # ^F carries to the next F of the same octave only, and = cancels it.
    assert pitches("^F F f =F F|F ^^C C|_B __B B|") == [66, 66, 77, 65, 65, 65, 62, 62, 70, 69, 69]


def test_an_accidental_holds_for_its_octave_only_until_the_barline():
    # ABC 2.1: ^c raises the c of that octave until the bar line; C and c' keep
    # the key's C natural; the next bar is back to the key.
    assert pitches("^c C c c' c|c C|") == [73, 60, 73, 84, 73, 72, 60]
    # The same inside chords (the top note is kept) and after a decoration.
    assert pitches("[^cA] Tc C,|c|") == [73, 73, 48, 72]


def test_barline_resets_accidentals_and_key_applies():
    assert pitches("F =F F|F c|", K="G") == [66, 65, 65, 66, 72]


def test_tied_note_keeps_its_accidental_over_the_barline():
    assert read("C2 ^F2-|F2 F2|", L="1/4") == [(C4, 0, 2), (66, 2, 6), (65, 6, 8)]


@pytest.mark.parametrize(
    "key,scale",
    [
        ("C", [60, 62, 64, 65, 67, 69, 71]),
        ("D", [61, 62, 64, 66, 67, 69, 71]),
        ("Bb", [60, 62, 63, 65, 67, 69, 70]),
        ("Ador", [60, 62, 64, 66, 67, 69, 71]),
        ("A dorian", [60, 62, 64, 66, 67, 69, 71]),
        ("Emin", [60, 62, 64, 66, 67, 69, 71]),
        ("Em", [60, 62, 64, 66, 67, 69, 71]),
        ("Gmix", [60, 62, 64, 65, 67, 69, 71]),
        ("Dmix", [60, 62, 64, 66, 67, 69, 71]),
        ("F#m", [61, 62, 64, 66, 68, 69, 71]),
        ("Cmaj", [60, 62, 64, 65, 67, 69, 71]),
        ("Cmin", [60, 62, 63, 65, 67, 68, 70]),
        ("Cdor", [60, 62, 63, 65, 67, 69, 70]),
        ("Cmix", [60, 62, 64, 65, 67, 69, 70]),
        ("Clydian", [60, 62, 64, 66, 67, 69, 71]),
        ("Ephr", [60, 62, 64, 65, 67, 69, 71]),
        ("Bloc", [60, 62, 64, 65, 67, 69, 71]),
        ("HP", [61, 62, 64, 66, 67, 69, 71]),
        ("Hp", [61, 62, 64, 66, 67, 69, 71]),
        ("none", [60, 62, 64, 65, 67, 69, 71]),
        ("D =c", [60, 62, 64, 66, 67, 69, 71]),
        ("C exp ^f _b", [60, 62, 64, 66, 67, 69, 70]),
        ("D exp _b ^f", [60, 62, 64, 66, 67, 69, 70]),
        ("Dmix=c", [60, 62, 64, 66, 67, 69, 71]),
        ("Dmix ^c", [61, 62, 64, 66, 67, 69, 71]),
        ("D ^c_b", [61, 62, 64, 66, 67, 69, 70]),
        ("G treble", [60, 62, 64, 66, 67, 69, 71]),
        ("Bb clef=bass middle=c", [60, 62, 63, 65, 67, 69, 70]),
    ],
)
def test_key_signatures_and_modes(key, scale):
    assert pitches("C D E F G A B|", K=key) == scale


# ----------------------------------------------------------------------------- rests, ties, tuplets, chords


def test_rests():
    assert read("C z D x|z2 E2|", L="1/4") == [(C4, 0, 1), (D4, 2, 3), (E4, 6, 8)]


def test_multi_measure_rests_last_whole_bars():
    assert read("Z2|C4|", L="1/4") == [(C4, 8, 12)]
    assert read("C3|Z|D3|", L="1/4", M="3/4") == [(C4, 0, 3), (D4, 6, 9)]


def test_ties_merge_into_one_note_also_over_the_barline():
    assert read("C2-C2 D2 E2-|E2 F2 -F4|", L="1/8") == [(C4, 0, 2), (D4, 2, 3), (E4, 3, 5), (F4, 5, 8)]


def test_a_tie_between_different_pitches_is_ignored():
    assert read("C-D E F|", L="1/4") == line([C4, D4, E4, F4], [1, 1, 1, 1])


def test_triplets():
    third = 1.0 / 3
    assert read("(3CDE F2 G2 A2|", L="1/8") == line([C4, D4, E4, F4, G4, A4], [third] * 3 + [1, 1, 1])


def test_general_tuplets():
    third = 1.0 / 3
    # (p:q:r: p notes in the time of q, for the next r notes.
    assert read("(3:2:2CD E C2 D2 E2|", L="1/8")[:3] == line([C4, D4, E4], [third, third, 0.5])
    assert read("(5:4:5CDEFG B2 c4|", L="1/8")[:5] == line([C4, D4, E4, F4, G4], [0.4] * 5)
    # (2 in compound time: 2 notes in the time of 3
    assert read("(2CD E2 F2|", M="6/8", L="1/8")[:2] == line([C4, D4], [0.75, 0.75])
    # (3 with a rest inside
    assert read("(3CzE G2 A2 B2|", L="1/8")[:2] == [(C4, 0, round(third, 6)), (E4, round(2 * third, 6), 1.0)]


def test_chords_keep_the_top_note_for_the_first_notes_length():
    assert read("[CEG]2 [EGc] [Bd] [c2e2g2]2|", L="1/8") == line([G4, C5, D5, G5], [1, 0.5, 0.5, 2])


# ----------------------------------------------------------------------------- repeats and parts


def test_simple_repeat_and_implicit_start():
    assert pitches("|:C D:|E F|", M="2/4") == [C4, D4, C4, D4, E4, F4]
    # no start repeat: back to the tune start ...
    assert pitches("C D:|E F|", M="2/4") == [C4, D4, C4, D4, E4, F4]
    # ... or to the end of the previous repeat / the last double bar
    assert pitches("C D:|E F:|", M="2/4") == [C4, D4, C4, D4, E4, F4, E4, F4]
    assert pitches("C D||E F:|", M="2/4") == [C4, D4, E4, F4, E4, F4]


def test_double_colon_and_combined_repeat_signs():
    assert pitches("|:C D::E F:|", M="2/4") == [C4, D4, C4, D4, E4, F4, E4, F4]
    assert pitches("C D:||:E F:||G A|]", M="2/4") == [C4, D4, C4, D4, E4, F4, E4, F4, G4, A4]
    assert pitches("|:C D:|:E F:|", M="2/4") == [C4, D4, C4, D4, E4, F4, E4, F4]


def test_variant_endings_are_played_in_order():
    expected = [C4, D4, E4, F4, C4, D4, G4, A4, B4, C5]
    assert pitches("|:C D|[1 E F:|[2 G A||B c|", M="2/4") == expected
    assert pitches("|:C D|1 E F:|2 G A||B c|", M="2/4") == expected
    assert pitches("C D|[1 E F:|\n[2 G A|B c|", M="2/4") == expected
    # a later part repeats from its own start, not from the tune start
    assert pitches("|:C D|[1 E F:|[2 G A||B c:|", M="2/4") == expected + [B4, C5]


def test_variant_endings_with_several_passes():
    assert pitches("|:C D|[1,3 E F:|[2 G A:|B c|", M="2/4") == [
        C4, D4, E4, F4, C4, D4, G4, A4, C4, D4, E4, F4, B4, C5]
    assert pitches("|:C D|[1-3 E F:|[4 G A||", M="2/4") == [C4, D4, E4, F4] * 3 + [C4, D4, G4, A4]


def test_parts_play_in_header_order():
    body = "P:A\nC D|E F:|\nP:B\nG A|B c||\n"
    assert pitches(body, M="2/4", header="P:BA") == [G4, A4, B4, C5, C4, D4, E4, F4, C4, D4, E4, F4]
    assert pitches(body, M="2/4", header="P:(AB)2") == ([C4, D4, E4, F4] * 2 + [G4, A4, B4, C5]) * 2
    # without a header P: the parts are played straight through
    assert pitches(body, M="2/4") == [C4, D4, E4, F4, C4, D4, E4, F4, G4, A4, B4, C5]


def test_part_label_starts_a_repeat_section():
    assert pitches("P:A\nC D:|\nP:B\nE F:|\n", M="2/4") == [C4, D4, C4, D4, E4, F4, E4, F4]


def test_parse_part_order():
    assert abc_reader.parse_part_order("AABB") == list("AABB")
    assert abc_reader.parse_part_order("A2B") == list("AAB")
    assert abc_reader.parse_part_order("(AB)2C") == list("ABABC")
    assert abc_reader.parse_part_order("A.B.C") == list("ABC")
    assert len(abc_reader.parse_part_order("((((A16)16)16)16)")) == abc_reader.MAX_PART_ORDER


# ----------------------------------------------------------------------------- fields in the body


def test_inline_fields():
    assert pitches("F [K:G] F [K:Bb] B E|") == [F4, 66, 70, 63]
    assert read("C [L:1/8] D E F2|") == line([C4, D4, E4, F4], [1, 0.5, 0.5, 1])


def test_field_lines_in_the_body():
    body = "C D E F|\nK:D\nF C D E|\nL:1/8\nC2 D2 E2 F2|\n"
    assert read(body) == line([C4, D4, E4, F4, 66, 61, D4, E4, 61, D4, E4, 66], [1] * 12)


def test_meter_changes_put_time_signatures_at_bar_starts():
    text = tune("C D E F|\nM:3/4\nG A B|[M:2/4] c d|", M="4/4")
    seq = abc_reader.abc_tune_to_sequence(text)
    sigs = [(ts.time / 0.5, ts.numerator, ts.denominator) for ts in seq.time_signatures]
    assert sigs == [(0, 4, 4), (4, 3, 4), (7, 2, 4)]
    assert notes_of(seq) == line([C4, D4, E4, F4, G4, A4, B4, C5, D5], [1] * 9)


def test_header_meter_replaced_before_the_music():
    # Nottingham style: header M:4/4, then K:, then M:6/8 before any note.
    seq = abc_reader.abc_tune_to_sequence(tune("M:6/8\nCDE FGA|", M="4/4", L=None))
    assert [(ts.numerator, ts.denominator) for ts in seq.time_signatures] == [(6, 8)]
    assert notes_of(seq) == line([C4, D4, E4, F4, G4, A4], [0.5] * 6)


@pytest.mark.parametrize("meter,expected", [("C", (4, 4)), ("C|", (2, 2)), ("2+3/8", (5, 8)), ("6/8", (6, 8))])
def test_parse_meter(meter, expected):
    assert abc_reader.parse_meter(meter) == expected


# ----------------------------------------------------------------------------- things without melody


def test_chord_symbols_decorations_grace_notes_slurs_lyrics_comments_are_ignored():
    plain = read("C D E F|G A B c|", L="1/4")
    noisy = read(
        '"C"C ~D .E HF|"^annotation"{ga}G (A B) !trill!c|  % a comment\n'
        "w: la la la la\nW: words\n",
        L="1/4",
    ).copy()
    assert noisy == plain
    assert read('T C uD vE +trill+F|\\\nG {/a}A LB Mc|', L="1/4") == line(
        [C4, D4, E4, F4, G4, A4, B4, C5], [1] * 8)


def test_only_the_first_voice_is_read():
    body = "V:1\nC D E F|\nV:2\nC, D, E, F,|\nV:1\nG A B c|\n"
    assert pitches(body) == [C4, D4, E4, F4, G4, A4, B4, C5]
    # Inline [V:] at line starts, as tune books interleave voices bar-line by bar-line.
    inline = "[V:1] C D E F|\n[V:2] C, D, E, F,|\n[V:3] E, F, G, A,|\n%\n[V:1] G A B c|\n[V:2] G, A, B, C|\n"
    assert pitches(inline) == [C4, D4, E4, F4, G4, A4, B4, C5]


def test_every_abc21_decoration_form_is_ignored():
    plain = read("C D E F|G A B c|", L="1/4")
    # The shortcuts ~ . and the redefinable letters H-W and h-w, !name! and the old +name+.
    for symbol in ".~HIJKLMNOPQRSTUVWhijklmnopqrstuvw":
        assert read(f"{symbol}C D E {symbol}F|G A {symbol}B c|", L="1/4") == plain, symbol
    assert read("!trill!C !>!D !fermata!E !D.S.!F|+trill+G +fermata+A !p!B c|", L="1/4") == plain
    # Decorations between a note and its broken-rhythm partner do not break the pair.
    assert read("C>TD k(E<F)|", L="1/8") == line([C4, D4, E4, F4], [0.75, 0.25, 0.25, 0.75])


def test_user_defined_symbols_are_decorations_in_header_and_body():
    header = "U: Y = !trill!\nU: k = !accent!"
    body = "YC kD E F|\nU: Z = !fermata!\nG A B c|\n[U: y = !coda!]C4|"
    # Y becomes a decoration; Z, a rest, and y, a spacer, keep their meaning.
    assert read(body, L="1/4", header=header) == line([C4, D4, E4, F4, G4, A4, B4, C5, C4], [1] * 8 + [4])
    with pytest.raises(SkipTune) as info:  # without the U: line Y is not music
        read("YC D E F|", L="1/4")
    assert info.value.reason == "bad_syntax"
    # A U: line that maps a symbol to something other than a decoration does not make it one.
    with pytest.raises(SkipTune):
        read("YC D E F|", L="1/4", header='U: Y = "text"')


def test_line_continuation_joins_music_lines_even_inside_a_barline():
    # "||\" then ":" on the next line is the end-and-start repeat "||:" split in two.
    split = read("C D E F||\\\n:G A B c:|\n", L="1/4")
    joined = read("C D E F||:G A B c:|\n", L="1/4")
    assert split == joined == line([C4, D4, E4, F4] + [G4, A4, B4, C5] * 2, [1] * 12)
    # A comment after the backslash, and a comment line in between, are allowed.
    assert read("C D \\ % first half\n% a remark\nE F|G A B c|", L="1/4") == line(
        [C4, D4, E4, F4, G4, A4, B4, C5], [1] * 8)
    # A field line between continued lines applies after the music before it.
    assert pitches("C D E F|\\\nK:G\nF G A B|") == [C4, D4, E4, F4, 66, G4, A4, B4]


def test_continued_header_line_is_one_field():
    text = "X:1\nT:t\n%%Bfly 0 300 6 \\\n 0 0 3 2 1\nQ:1/4=120 \\\n  % tempo\nM:4/4\nL:1/4\nK:C\nC D E F|\n"
    assert notes_of(abc_reader.abc_tune_to_sequence(text)) == line([C4, D4, E4, F4], [1] * 4)


def test_invisible_bar_line_is_not_a_section_start():
    # With [|] a plain bar, the end repeat goes back to the tune start and the
    # pickup G is played again; as a section start it would restart after [|].
    got = pitches("G|C D E F[|]G A B c:|")
    assert got == [G4, C4, D4, E4, F4, G4, A4, B4, C5] * 2
    assert read("G|C D E F[|]G A B c|")[0] == (G4, 3, 4)


def test_only_newlines_end_lines():
    # A NEL (\x85) or form feed inside a text field is text, not a line break.
    text = "X:1\nT:t\nN: Jiefang\x85 Ribao\x0c gedruckt\nM:4/4\nL:1/4\nK:C\nC D E F|\n"
    assert notes_of(abc_reader.abc_tune_to_sequence(text)) == line([C4, D4, E4, F4], [1] * 4)


def test_missing_x_or_t_field_is_not_fatal():
    no_title = "X:1\nM:4/4\nL:1/4\nK:C\nC D E F|\n"
    assert notes_of(abc_reader.abc_tune_to_sequence(no_title)) == line([C4, D4, E4, F4], [1] * 4)
    book = ("L:1/4\n\nT:No number\nM:4/4\nK:C\nC D E F|\n\n"
            "X:2\nT:Two\nK:G\nF G A B|\n\n"
            "T:Three, no number either\nK:D\nF2 C2|\n\nsome free text\n")
    tunes = abc_reader.split_abc_book(book)
    assert [t.splitlines()[0] for t in tunes] == ["T:No number", "X:2", "T:Three, no number either"]
    assert [pitches_of(t) for t in tunes] == [[C4, D4, E4, F4], [66, G4, A4, B4], [66, 61]]
    assert abc_reader.split_abc_book("T:Only\nK:C\nC D|\n") == ["T:Only\nK:C\nC D|"]


def pitches_of(text: str):
    return [p for p, _, _ in notes_of(abc_reader.abc_tune_to_sequence(text))]


def test_syntax_error_in_a_free_meter_tune_is_counted_as_such():
    with pytest.raises(SkipTune) as info:
        abc_reader.abc_tune_to_sequence(tune("C D ] E|", M="none"))
    assert info.value.reason == "bad_syntax"
    with pytest.raises(SkipTune) as info:
        abc_reader.abc_tune_to_sequence(tune("C D E|\nM:FREI\nC D|"))
    assert (info.value.reason, info.value.detail) == ("unsupported_meter", "M:FREI")
    # A later header M: replaces an unreadable book default.
    assert pitches_of("X:1\nM:none\nM:4/4\nL:1/4\nK:C\nC D|\n") == [C4, D4]


# ----------------------------------------------------------------------------- bar alignment


def test_pickup_is_aligned_so_the_first_full_bar_starts_on_beat_one():
    got = read("G|c d e f|g4|")
    assert got[0] == (G4, 3, 4)
    assert got[1] == (C5, 4, 5)
    seq = abc_reader.abc_tune_to_sequence(tune("A/2B/2|c d e f|"))
    grids = CODEC.to_grids(seq)
    assert not grids.dropped.get("off_grid_onset")


def test_repeated_pickup_completes_the_short_last_bar():
    # G | CDEF | GAB :|  -> the pickup, played again, completes the 3-beat bar.
    assert read("G|C D E F|G A B:|") == line([G4, C4, D4, E4, F4, G4, A4, B4] * 2, [1] * 16, start=3)


def test_short_bar_not_completed_is_padded_to_the_barline():
    assert read("C D E F|G A|c d e f|") == [
        (C4, 0, 1), (D4, 1, 2), (E4, 2, 3), (F4, 3, 4), (G4, 4, 5), (A4, 5, 6),
        (C5, 8, 9), (D5, 9, 10), (E5, 10, 11), (F5, 11, 12)]


def test_pickup_after_a_meter_change_is_right_aligned():
    got = read("C D E F|\nM:3/4\nG|A B c|")
    assert got[4] == (G4, 6, 7)  # bar of 3/4 starts at 4; pickup G ends at 7
    assert got[5] == (A4, 7, 8)


def test_tempo_is_120_qpm_and_metadata_is_filled():
    seq = abc_reader.abc_tune_to_sequence(tune("C D E F|"), origin="book.abc", index=3)
    assert [t.qpm for t in seq.tempos] == [120.0]
    assert seq.notes[0].end_time == pytest.approx(0.5)
    assert seq.id == "book.abc#3" and seq.filename == "book.abc"
    assert seq.sequence_metadata.title == "Test tune"
    assert seq.total_time == pytest.approx(2.0)


# ----------------------------------------------------------------------------- skips


@pytest.mark.parametrize(
    "text,reason",
    [
        ("X:1\nT:t\nM:4/4\nC D E F|\n", "bad_header"),
        ("X:1\nT:t\nM:4/4\n", "no_key_field"),
        (tune("C D|", K="Xyz"), "bad_key"),
        (tune("C D|", K="G#######"), "bad_key"),
        (tune("C D|", M="none"), "unsupported_meter"),
        (tune("C D|", M="4/0"), "unsupported_meter"),
        (tune("C D|", L="abc"), "bad_length"),
        (tune("C D ] E|"), "bad_syntax"),
        (tune("C [D E|"), "bad_syntax"),
        (tune("C0 D|"), "bad_duration"),
        (tune("> C D|"), "bad_duration"),
        (tune("(0CDE|"), "bad_tuplet"),
        (tune("(3:0CDE|"), "bad_tuplet"),
        (tune("C D & E F|"), "polyphonic"),
        (tune("z4|z4|"), "no_notes"),
        (tune("c'''''''|"), "pitch_out_of_range"),
        (tune("C" + "9" * 50 + "|"), "bad_duration"),
    ],
)
def test_skip_reasons(text, reason):
    with pytest.raises(SkipTune) as info:
        abc_reader.abc_tune_to_sequence(text)
    assert info.value.reason == reason


def test_skip_tune_survives_pickling():
    err = pickle.loads(pickle.dumps(SkipTune("bad_key", "K:Xyz")))
    assert (err.reason, err.detail) == ("bad_key", "K:Xyz")


# ----------------------------------------------------------------------------- books


def test_split_abc_book_and_book_header_defaults():
    book = "% a tune book\nL:1/4\nM:3/4\n\nX:1\nT:One\nK:C\nC D E|\n\nfree text\n\nX:2\nT:Two\nL:1/8\nK:C\nC D E F G A|\n"
    tunes = abc_reader.split_abc_book(book)
    assert [t.splitlines()[0] for t in tunes] == ["X:1", "X:2"]
    first = abc_reader.abc_tune_to_sequence(tunes[0])
    assert notes_of(first) == line([C4, D4, E4], [1, 1, 1])  # the book's L:1/4
    assert (first.time_signatures[0].numerator, first.time_signatures[0].denominator) == (3, 4)
    second = abc_reader.abc_tune_to_sequence(tunes[1])
    assert notes_of(second)[1] == (D4, 0.5, 1.0)  # its own L:1/8 wins
    assert abc_reader.split_abc_book("no tunes here") == []


# ----------------------------------------------------------------------------- folk-rnn tokens


FOLK_RNN_EXAMPLE = (
    "M:4/4 K:Cdor |: G c c B c B A B | G c B d c 2 B c | G c c B c B A B |1 f d B d c 2 d e :| "
    "|2 f d B d c 4 |"
)


def test_split_folk_rnn():
    text = "M:4/4\nK:Cmaj\nC D E F |\n\nM:6/8\nK:Cmin\nC 3 E 3 |\n\n\n" + FOLK_RNN_EXAMPLE + "\n"
    assert len(abc_reader.split_folk_rnn(text)) == 3


def test_folk_rnn_tunes_read_like_abc():
    seq = abc_reader.folk_rnn_tune_to_sequence(FOLK_RNN_EXAMPLE, origin="data_v2", index=7)
    got = notes_of(seq)
    Eb5, Bb4, Ab4 = 75, 70, 68
    bar1 = [G4, C5, C5, Bb4, C5, Bb4, A4, Bb4]  # C dorian: B and E flat, A natural
    assert [p for p, _, _ in got[:8]] == bar1
    assert got[9] == (C5, 4.5, 5.0)
    # |1 ... :| |2 ...: the first ending then the second, 2 passes of 4 bars
    assert len(got) == 2 * (8 + 7 + 8) + 7 + 5
    assert got[-1] == (C5, 30.0, 32.0)
    assert seq.id == "data_v2#7"


def test_folk_rnn_durations_and_broken_rhythm_tokens():
    got = notes_of(abc_reader.folk_rnn_tune_to_sequence("M:4/4 K:Cmaj C /2 D /2 E 3/2 F /2 G > A c 2< d 2 |"))
    assert got == line([C4, D4, E4, F4, G4, A4, C5, D5], [0.25, 0.25, 0.75, 0.25, 0.75, 0.25, 0.5, 1.5])
    with pytest.raises(SkipTune) as info:
        abc_reader.folk_rnn_tune_to_sequence("M:4/4 K:Cmaj")
    assert info.value.reason == "empty_tune"


# ----------------------------------------------------------------------------- the real corpus


def test_the_nottingham_corpus_parses(nottingham_dir):
    total, reasons, sequences = 0, collections.Counter(), []
    for path in sorted(nottingham_dir.glob("*.abc")):
        for i, text in enumerate(abc_reader.split_abc_book(path.read_text(encoding="latin-1"))):
            total += 1
            try:
                sequences.append(abc_reader.abc_tune_to_sequence(text, origin=path.name, index=i))
            except SkipTune as skip:
                reasons[skip.reason] += 1
    assert total > 1000
    assert len(sequences) + sum(reasons.values()) == total
    assert len(sequences) >= 0.99 * total, reasons
    kept_44 = n_44 = 0
    off_grid = 0
    for seq in sequences:
        starts = [n.start_time for n in seq.notes]
        assert starts == sorted(starts)
        assert all(n.end_time > n.start_time for n in seq.notes)
        # monophonic: no note starts before the previous one ends
        assert all(b.start_time >= a.end_time - 1e-9 for a, b in zip(seq.notes, seq.notes[1:]))
        if any((ts.numerator, ts.denominator) in CODEC.METERS for ts in seq.time_signatures):
            n_44 += 1
            grids = CODEC.to_grids(seq)
            kept_44 += len(grids.grids) > 0
            off_grid += bool(grids.dropped.get("off_grid_onset"))
    assert n_44 > 500
    assert kept_44 >= 0.95 * n_44
    assert off_grid <= 0.02 * n_44  # pickups aligned: only tunes with 32nd notes drop bars


SKIP_REASONS = {"no_key_field", "bad_header", "bad_key", "unsupported_meter", "bad_length", "bad_syntax",
                "bad_duration", "bad_tuplet", "polyphonic", "pitch_out_of_range", "unbalanced_repeat",
                "too_long", "no_notes"}


@pytest.mark.parametrize("collection,min_tunes", [
    ("oneills1850", 2000), ("airds_airs", 1100), pytest.param("essen", 8000, marks=pytest.mark.slow)])
def test_extra_collections_reject_at_most_3_percent_for_reasons_other_than_meter(nottingham_dir, collection,
                                                                                 min_tunes):
    from music_attr_vae.data import sources

    directory = nottingham_dir.parent / collection
    total, reasons = 0, collections.Counter()
    for path in sorted(directory.glob("*.abc")):
        for i, text in enumerate(abc_reader.split_abc_book(sources.decode_text(path.read_bytes()))):
            total += 1
            try:
                seq = abc_reader.abc_tune_to_sequence(text, origin=path.name, index=i)
            except SkipTune as skip:
                reasons[skip.reason] += 1
                continue
            assert all(b.start_time >= a.end_time - 1e-9 for a, b in zip(seq.notes, seq.notes[1:]))
    assert total >= min_tunes, f"{directory}: only {total} tunes"
    assert set(reasons) <= SKIP_REASONS, reasons
    other = sum(n for r, n in reasons.items() if r != "unsupported_meter")
    assert other <= 0.03 * total, (other, total, reasons)
