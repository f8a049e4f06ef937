"""The ABC reader agrees with music21 on the real corpus.

For a deterministic sample of Nottingham tunes spread over every file, both
readers parse the tune, repeats are expanded (``expandRepeats`` on music21's
part), and the flat sequences of notes (MIDI pitch, length in quarter notes)
are compared in played order.  Ties are merged on both sides (for music21:
consecutive notes of the same pitch joined by a tie), chords keep their top note, grace notes and rests are left
out (our reader pads pickups and short bars with silence; music21 does not).

Three music21 behaviours are normalised away before either reader sees the text
(:func:`normalise_for_comparison`), so that the comparison tests notes, not
conventions:

* an end repeat ``:|`` with no start repeat: music21 goes back to the start of
  the whole tune, where folk players (and our reader) go back to the start of
  the section (after ``||``, the previous repeat or a ``P:`` label).  The
  normaliser writes the implied ``|:`` explicitly.
* ``::``, ``:|:``, a start repeat followed by field lines or by another bar
  line (music21 reads ``A::`` as a field ``A:``, ``:|:`` as an end repeat
  only, and drops the start repeat in the other cases): written as a separate
  ``:|`` and ``|:`` in front of the next music.
* a header ``P:`` play order (music21 ignores it): the line is removed.
* accidentals: music21 carries them through the bar only for files that
  declare ABC 2.x (``%abc-2.1``), and then across octaves unless told
  ``%%propagate-accidentals octave``; both lines are prepended (the ABC 2.1
  standard, and our reader, carry an accidental to the end of the bar for the
  same letter in the same octave).

Known music21 differences left in (they are why the bar is 98%, not 100%):
music21 drops ties written on chords (``[ce]-[ce]``, ``[c-e-][ce]``) and does
not carry an accidental written inside a chord (``[^cf] c``) through the bar;
on the whole Nottingham corpus these are the only disagreements (6 of 1030).

``bench/bench_music21_agreement.py`` runs the same comparison on the whole
corpus and prints the agreement rate.
"""

from __future__ import annotations

import collections
import math
import os
import pathlib
import re
import warnings
from typing import List, Optional, Sequence, Tuple

import pytest

music21 = pytest.importorskip("music21")

from music_attr_vae.data import abc_reader, sources  # noqa: E402

NoteList = List[Tuple[int, float]]

SAMPLE_SIZE = 120
EXTRA_SAMPLE_SIZE = 60  # per extra collection in the (slow) test; the bench compares more
EXTRA_COLLECTIONS = ("oneills1850", "airds_airs", "essen")
AGREEMENT_REQUIRED = 0.98

_BODY_TOKEN = re.compile(r'"[^"\n]*"|%[^\n]*|^[A-Za-z]:[^\n]*$|::|:*\|[|\]:]*', re.M)
_FIELD_LINES_AFTER = re.compile(r"[ \t\\]*\n((?:[A-Za-z]:[^\n]*\n)+)")


def normalise_for_comparison(tune: str) -> str:
    """Rewrite a tune so that music21's conventions match the ABC standard (see module doc).

    Every rewrite keeps the music the same for a standard reader (ours included).
    """
    k = re.search(r"^K:.*$", tune, re.M)
    if k is None:
        return tune
    header, body = tune[: k.end() + 1], tune[k.end() + 1:]
    header = re.sub(r"^P:.*\n?", "", header, flags=re.M)
    edits: List[Tuple[int, int, str]] = []  # (start, end, replacement) in body

    def add_start_repeat(pos: int) -> None:
        """Insert ``|:`` at pos, or after the field lines that follow it (music21 drops it there)."""
        fields = _FIELD_LINES_AFTER.match(body, pos)
        if fields:
            edits.append((fields.end(), fields.end(), "|:"))
        else:
            edits.append((pos, pos, " |:" if pos and body[pos - 1] in "|:" else "|:"))

    boundary = 0
    open_start = False
    previous_bar_end = -1
    for m in _BODY_TOKEN.finditer(body):
        tok = m.group()
        if tok[0] in '"%':
            continue
        if tok[0].isalpha():
            if tok.startswith("P:"):
                boundary, open_start = m.end() + 1, False
            continue
        if tok == "|" and previous_bar_end >= 0 and not body[previous_bar_end:m.start()].strip(" \t\n\\"):
            # "|: |" -- music21 lets the plain bar line replace the start repeat.
            edits.append((m.start(), m.end(), ""))
            continue
        previous_bar_end = m.end()
        ends = tok == "::" or tok.startswith(":")
        starts = tok == "::" or tok.endswith(":")
        if ends and not open_start:
            add_start_repeat(boundary)
        if starts and (ends or _FIELD_LINES_AFTER.match(body, m.end())):
            # music21 reads "A::" as a field "A:", "::"/":|:" as an end only, and
            # drops a start repeat followed by field lines: write it on its own.
            edits.append((m.start(), m.end(), ":|" if ends else "|"))
            add_start_repeat(m.end())
        if ends or starts:
            boundary, open_start = m.end(), starts
        elif ("||" in tok or "]" in tok) and not open_start:
            boundary = m.end()
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        body = body[:start] + text + body[end:]
    return "%abc-2.1\n%%propagate-accidentals octave\n" + header + body


def reader_notes(tune: str) -> NoteList:
    """(pitch, quarter length) of our reader's notes, in played order."""
    seq = abc_reader.abc_tune_to_sequence(tune)
    notes = sorted(seq.notes, key=lambda n: n.start_time)
    return [(n.pitch, (n.end_time - n.start_time) / abc_reader.SECONDS_PER_BEAT) for n in notes]


def music21_notes(tune: str) -> Optional[NoteList]:
    """(pitch, quarter length) of music21's notes after expandRepeats, ties merged; None when it fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = music21.converter.parse(tune, format="abc", forceSource=True)
            parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
            part = parts[0]
            try:
                part = part.expandRepeats()
            except Exception:  # noqa: BLE001 - music21 cannot expand: compare unexpanded
                return None
            out: NoteList = []
            tied = False  # the previous note is tied to the next one
            for el in part.recurse().notes:
                if el.duration.isGrace or el.quarterLength == 0:
                    continue
                pitch = max(p.midi for p in el.pitches)
                length = float(el.quarterLength)
                # music21 ties notes of different pitches too ("B-c"); a tie only
                # joins notes of the same pitch, so merge those only.
                if tied and out and out[-1][0] == pitch:
                    out[-1] = (pitch, out[-1][1] + length)
                else:
                    out.append((pitch, length))
                tied = el.tie is not None and el.tie.type in ("start", "continue")
            return out
    except Exception:  # noqa: BLE001 - any music21 failure means "music21 rejects the tune"
        return None


def same_notes(a: Sequence[Tuple[int, float]], b: Sequence[Tuple[int, float]]) -> bool:
    return len(a) == len(b) and all(
        pa == pb and math.isclose(qa, qb, abs_tol=1e-3) for (pa, qa), (pb, qb) in zip(a, b)
    )


# ----------------------------------------------------------------------------- where music21 is wrong

# Body text that the misreading rewrites leave alone: chord symbols and
# annotations, comments, field lines, inline fields and !decorations!.
_PROTECTED = re.compile(r'"[^"\n]*"|%[^\n]*|^[A-Za-z+]:[^\n]*$|\[[A-Za-z]:[^\]\n]*\]|![^!\n]*!', re.M)


def _rewrite_music(tune: str, pattern: "re.Pattern", repl) -> str:
    """Apply a substitution to the music of the tune body only (not to protected text)."""
    k = re.search(r"^K:.*$", tune, re.M)
    if k is None:
        return tune
    head, body = tune[: k.end()], tune[k.end():]
    out, pos = [], 0
    for m in _PROTECTED.finditer(body):
        out.append(pattern.sub(repl, body[pos:m.start()]))
        out.append(m.group())
        pos = m.end()
    out.append(pattern.sub(repl, body[pos:]))
    return head + "".join(out)


def _drop_misread_letters(tune: str) -> str:
    return _rewrite_music(tune, re.compile(r"[HJWjpq]"), "")


def _drop_gt_annotations(tune: str) -> str:
    return re.sub(r'"[>][^"\n]*"', "", tune)


def _slashes(m: "re.Match") -> str:
    return f"{m.group(1)}/{2 ** len(m.group(2))}"


def _spell_out_slashes(tune: str) -> str:
    return _rewrite_music(tune, re.compile(r"(\d+)(//+)(?![\d/])"), _slashes)


def _inline_keys_as_lines(tune: str) -> str:
    k = re.search(r"^K:.*$", tune, re.M)
    if k is None:
        return tune
    body = re.sub(r"[ \t]*\[K:([^\]\n]*)\][ \t]*", r"\nK:\1\n", tune[k.end():])
    return tune[: k.end()] + re.sub(r"\n\n+", "\n", body)


_TIED_OVER_BAR = re.compile(r"(\^\^|\^|__|_|=)([A-Ga-g][,']*)([\d/]*-[ \t]*(?:\|[ \t]*)+)(?=\2(?![,']))")


def _restate_tied_accidentals(tune: str) -> str:
    return _rewrite_music(tune, _TIED_OVER_BAR, r"\1\2\3\1")


def _graces_before_tuplets(tune: str) -> str:
    return _rewrite_music(tune, re.compile(r"\((\d+(?::\d*){0,2})(\{[^}]*\})"), r"\2(\1")


def _join_broken_rhythm(tune: str) -> str:
    return _rewrite_music(tune, re.compile(r"[ \t().\-]*([<>]+)[ \t().\-]*"), r"\1")


# Kinds of disagreement where music21 is wrong, each with a rewrite that removes
# the construct music21 misreads and leaves the notes of a standard reader (ours)
# unchanged; the minimal examples are in the tests below and in BUILD_NOTES.md.
MUSIC21_MISREADINGS = (
    # "Ha3": music21 drops the note after the decoration H (fermata) and misplaces
    # it after J, W, j, p, q (redefinable decoration letters, ABC 2.1 section 4.16).
    ("decoration_letter", _drop_misread_letters),
    # '">"G3': music21 drops the note after an annotation placed with ">" (4.19).
    ("annotation_gt", _drop_gt_annotations),
    # "a>)f", "(GA>).F", "B>-c": music21 ignores a broken rhythm unless ">" touches
    # both notes; a slur, staccato dot or tie mark between them does not change it (4.4).
    ("broken_rhythm_across_marks", _join_broken_rhythm),
    # "B3//": music21 reads 3/2 of the unit; ABC 2.1 (4.3) reads "//" as /4, so 3/4.
    ("length_number_slashes", _spell_out_slashes),
    # "|[K:C] F": music21 keeps the old key's accidentals after an inline key
    # change (a K: field line works); ABC 2.1 (3.2) makes them equivalent.
    ("inline_key_change", _inline_keys_as_lines),
    # K:D "=C2-|C4": music21 plays the tied note C#, re-applying the key after the
    # bar line; a tie holds one note, so it stays C natural (the notes merge).
    ("tie_keeps_accidental", _restate_tied_accidentals),
    # "(3{e}dcd": music21 counts the grace note as one of the three, so the last d
    # is not shortened; grace notes take no time and are not tuplet notes (4.12, 4.13).
    ("grace_note_in_tuplet", _graces_before_tuplets),
)


def compare_tune(tune: str) -> Optional[str]:
    """How the readers compare on a tune: None when either rejects it, else

    ``"agree"``, ``"disagree"``, or the name of the music21 misreading (from
    :data:`MUSIC21_MISREADINGS`) whose rewrite makes them agree.  The rewrites
    are applied cumulatively, in order; one that changes our reader's notes
    explains nothing and stops the search.
    """
    text = normalise_for_comparison(tune)
    try:
        ours = reader_notes(text)
    except abc_reader.SkipTune:
        return None
    theirs = music21_notes(text)
    if not theirs:
        return None
    if same_notes(ours, theirs):
        return "agree"
    for kind, rewrite in MUSIC21_MISREADINGS:
        rewritten = rewrite(text)
        if rewritten == text:
            continue
        try:
            if not same_notes(reader_notes(rewritten), ours):
                break
        except abc_reader.SkipTune:
            break
        text = rewritten
        theirs = music21_notes(text)
        if theirs and same_notes(ours, theirs):
            return kind
    return "disagree"


def corpus_tunes(corpus_dir: pathlib.Path) -> List[Tuple[str, int, str]]:
    """(file name, index, tune text) of every ABC tune in corpus_dir, as prepare lists them."""
    return [(os.path.basename(t.origin), t.index, t.payload)
            for t in sources.read_raw_tunes(sources.resolve_source(str(corpus_dir))) if t.kind == "abc"]


def deterministic_sample(tunes: Sequence, size: int) -> list:
    """Every k-th tune (evenly spread over all files, in file order)."""
    if len(tunes) <= size:
        return list(tunes)
    step = len(tunes) / size
    return [tunes[int(i * step)] for i in range(size)]


# ----------------------------------------------------------------------------- tests


def test_normaliser_rewrites_music21_quirks_only():
    tune = "X:1\nT:t\nM:4/4\nL:1/4\nK:C\n|:C D E F|C4:: G A B c|G4:||:\nK:G\nd e f g|d4:|\n"
    out = normalise_for_comparison(tune)
    assert out[out.index("K:C"):] == "K:C\n|:C D E F|C4:| |: G A B c|G4:|\nK:G\n|:d e f g|d4:|\n"
    assert reader_notes(out) == reader_notes(tune)
    assert music21_notes(out) == reader_notes(tune)


def test_normaliser_makes_implied_start_repeats_explicit():
    tune = "X:1\nT:t\nP:AB\nM:6/8\nL:1/8\nK:D\nP:A\nA|def fed:|\nP:B\ne|fga agf||gab bag:|\n"
    out = normalise_for_comparison(tune)
    assert "P:AB" not in out
    assert out.startswith("%abc-2.1\n%%propagate-accidentals octave\nX:1\n")
    # Implied starts: at part A's start and after the double bar of part B.
    assert out[out.index("K:D"):] == "K:D\nP:A\n|:A|def fed:|\nP:B\ne|fga agf|| |:gab bag:|\n"
    # Our reader plays both texts the same way (the implied start is where we restart).
    assert reader_notes(out) == reader_notes(tune.replace("P:AB\n", ""))


def agreement(sample) -> Tuple[float, collections.Counter, List[str]]:
    """(agreement rate with music21's misreadings set aside, outcome counts, disagreeing tunes)."""
    outcomes = collections.Counter()
    disagree = []
    for name, i, tune in sample:
        outcome = compare_tune(tune)
        outcomes[outcome or "rejected"] += 1
        if outcome == "disagree":
            disagree.append(f"{name}#{i}")
    compared = sum(n for k, n in outcomes.items() if k != "rejected")
    return 1 - len(disagree) / max(compared, 1), outcomes, disagree


def test_music21_agrees_on_a_sample_of_the_corpus(nottingham_dir):
    sample = deterministic_sample(corpus_tunes(nottingham_dir), SAMPLE_SIZE)
    rate, outcomes, disagree = agreement(sample)
    assert outcomes["rejected"] <= 0.1 * len(sample), outcomes
    assert rate >= AGREEMENT_REQUIRED, f"agreement {rate:.3f}; disagreeing tunes: {disagree}"


@pytest.mark.slow
@pytest.mark.parametrize("collection", EXTRA_COLLECTIONS)
def test_music21_agrees_on_a_sample_of_each_extra_collection(collection):
    directory = nottingham_dir_parent() / collection
    tunes = corpus_tunes(directory)
    assert len(tunes) > 1000, f"{directory}: the collection is missing"
    rate, outcomes, disagree = agreement(deterministic_sample(tunes, EXTRA_SAMPLE_SIZE))
    assert outcomes["rejected"] <= 0.1 * EXTRA_SAMPLE_SIZE, outcomes
    assert rate >= AGREEMENT_REQUIRED, f"agreement {rate:.3f} {dict(outcomes)}; disagreeing: {disagree}"


def nottingham_dir_parent() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _bars(body: str, key: str = "G") -> str:
    """A tune whose middle bar is ``body`` (music21 needs whole bars to expand repeats)."""
    return f"X:1\nT:t\nM:4/4\nL:1/8\nK:{key}\nCDEF GABc|{body}|CDEF GABc|]\n"


@pytest.mark.parametrize(
    "kind,body,standard",
    [
        # H is a fermata: the a3 is played.
        ("decoration_letter", "f2g Ha3", [(78, 1.0), (79, 0.5), (81, 1.5)]),
        ("decoration_letter", "f2g pa3", [(78, 1.0), (79, 0.5), (81, 1.5)]),
        # '">"' is an annotation to the right of the G3, which is played.
        ("annotation_gt", '">"G3 A B2 c2', [(67, 1.5), (69, 0.5), (71, 1.0), (72, 1.0)]),
        # a>f with a slur end, a staccato dot or a tie mark between them is still dotted.
        ("broken_rhythm_across_marks", "a>)f d2 e2", [(81, 0.75), (78, 0.25), (74, 1.0), (76, 1.0)]),
        ("broken_rhythm_across_marks", "(ga>).f d2 e2", [(79, 0.5), (81, 0.75), (78, 0.25), (74, 1.0), (76, 1.0)]),
        ("broken_rhythm_across_marks", "a>-c d2 e2", [(81, 0.75), (72, 0.25), (74, 1.0), (76, 1.0)]),
        ("length_number_slashes", "B3// c/8 d7/ e4", [(71, 0.375), (72, 0.0625), (74, 1.75), (76, 2.0)]),
        ("inline_key_change", "F2 G2|[K:F] F2 B2", [(66, 1.0), (67, 1.0), (65, 1.0), (70, 1.0)]),
        ("tie_keeps_accidental", "E2 ^F2- | F4", [(64, 1.0), (66, 3.0)]),
        ("grace_note_in_tuplet", "A2 ((3{e}dcd) f4", [(69, 1.0), (74, 1 / 3), (72, 1 / 3), (74, 1 / 3), (78, 2.0)]),
    ],
)
def test_each_music21_misreading_is_real_and_its_rewrite_explains_it(kind, body, standard):
    key = "C" if kind == "tie_keeps_accidental" else "G"
    text = normalise_for_comparison(_bars(body, key))
    scale = [(60, 0.5), (62, 0.5), (64, 0.5), (65 if key == "C" else 66, 0.5), (67, 0.5), (69, 0.5), (71, 0.5), (72, 0.5)]
    after = scale
    if kind == "inline_key_change":  # F major from here on: F and B flat
        after = [({66: 65, 71: 70}.get(p, p), q) for p, q in scale]
    assert same_notes(reader_notes(text), scale + standard + after)  # the standard's reading
    assert not same_notes(music21_notes(text), reader_notes(text))  # music21 misreads it
    assert compare_tune(_bars(body, key)) == kind
    rewrite = dict(MUSIC21_MISREADINGS)[kind]
    assert reader_notes(rewrite(text)) == reader_notes(text)


def test_a_rewrite_that_changes_our_notes_explains_nothing():
    # "a>-a": the tie joins two a's, so removing "-" changes our notes: no excuse for music21.
    text = normalise_for_comparison(_bars("a>-a d2 e2"))
    assert reader_notes(_join_broken_rhythm(text)) != reader_notes(text)
    assert compare_tune(_bars("a>-a d2 e2")) in ("agree", "disagree")
    # Rewrites never touch chord symbols, comments or field lines.
    assert _drop_misread_letters('X:1\nK:G\n"Hp"H a % Hj\nw: Hope\n') == 'X:1\nK:G\n"Hp" a % Hj\nw: Hope\n'


def test_music21_drops_the_overflow_of_an_over_long_bar_before_an_end_repeat():
    # "fed d3 d2" is 8 eighths in a 6/8 bar (a missing bar line): on the first pass
    # music21's expandRepeats drops the d2 that overflows the bar.  No rewrite
    # excuses it: such tunes are counted as disagreements.
    tune = "X:1\nT:t\nM:6/8\nL:1/8\nK:D\n|:A|d3 e3|fed d3 d2:|\nf3 e3|]\n"
    ours = reader_notes(normalise_for_comparison(tune))
    theirs = music21_notes(normalise_for_comparison(tune))
    assert len(ours) == len(theirs) + 1 and ours[7] == (74, 1.0) and theirs[7] == (69, 0.5)
    assert compare_tune(tune) == "disagree"
