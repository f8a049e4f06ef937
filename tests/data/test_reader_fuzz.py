"""Fuzzing the readers: corrupted real tunes and generated text never crash them.

Every input ends either as a valid NoteSequence or as a SkipTune with a known
reason; nothing else may escape, and every input is accounted for.
"""

from __future__ import annotations

import collections
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from music_attr_vae.data import abc_reader, midi_reader
from music_attr_vae.data.abc_reader import SkipTune

N_MUTANTS = 4000
KNOWN_REASONS = {
    "no_key_field", "bad_header", "bad_key", "unsupported_meter", "bad_length", "bad_syntax", "bad_duration",
    "bad_tuplet", "polyphonic", "pitch_out_of_range", "unbalanced_repeat", "too_long", "no_notes",
    "empty_tune", "bad_midi", "midi_polyphonic",
}
ABC_SYMBOLS = [
    "|", "||", "|:", ":|", "::", "[1", "[2", "|1", ":|2", "(3", "(3:2:4", "(", ")", "[", "]", "[K:G]",
    "[M:3/4]", "[L:1/16]", "\nK:Ador\n", "\nM:6/8\n", "\nP:B\n", "\nL:1/4\n", ">", "<", ">>", "-", "^",
    "_", "=", "^^", ",", "'", "z", "x", "Z4", "{g}", "!trill!", "+", '"Am"', "~", ".", "2", "/", "3/2",
    "//", "0", "&", "%", "\\", "[ceg]", "\n\n", "X:2\n", "y", "\n", " ", "99999999", "V:2\n",
]


def check_outcome(run, counts: collections.Counter) -> None:
    """Run one parse: a valid sequence counts as 'ok', a SkipTune under its reason."""
    try:
        seq = run()
    except SkipTune as skip:
        assert skip.reason in KNOWN_REASONS, skip.reason
        counts[skip.reason] += 1
        return
    assert len(seq.notes) > 0
    assert [t.qpm for t in seq.tempos] == [120.0]
    for n in seq.notes:
        assert 0 <= n.pitch <= 127
        assert math.isfinite(n.start_time) and math.isfinite(n.end_time)
        assert 0 <= n.start_time < n.end_time <= seq.total_time + 1e-6
    for ts in seq.time_signatures:
        assert ts.numerator > 0 and ts.denominator > 0 and ts.time >= 0
    counts["ok"] += 1


def mutate(text: str, rng: random.Random) -> str:
    """One to four random corruptions of an ABC tune."""
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["delete", "insert", "duplicate", "swap_lines", "truncate", "symbol", "symbol"])
        n = len(text)
        if n == 0:
            return rng.choice(ABC_SYMBOLS)
        i = rng.randrange(n)
        if op == "delete":
            text = text[:i] + text[i + rng.randint(1, 5):]
        elif op == "insert":
            text = text[:i] + chr(rng.randint(32, 126)) + text[i:]
        elif op == "duplicate":
            j = min(n, i + rng.randint(1, 40))
            text = text[:j] + text[i:j] + text[j:]
        elif op == "swap_lines":
            lines = text.split("\n")
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        elif op == "truncate":
            text = text[:i]
        else:
            text = text[:i] + rng.choice(ABC_SYMBOLS) + text[i:]
    return text


@pytest.fixture(scope="module")
def corpus_tunes(nottingham_dir):
    tunes = []
    for path in sorted(nottingham_dir.glob("*.abc")):
        tunes.extend(abc_reader.split_abc_book(path.read_text(encoding="latin-1")))
    return tunes


def test_corrupted_real_tunes_never_crash_the_reader(corpus_tunes):
    rng = random.Random(1234)
    counts: collections.Counter = collections.Counter()
    for k in range(N_MUTANTS):
        text = mutate(rng.choice(corpus_tunes), rng)
        check_outcome(lambda: abc_reader.abc_tune_to_sequence(text, origin="fuzz", index=k), counts)
    assert sum(counts.values()) == N_MUTANTS
    # Most corruptions still leave a readable tune; several skip reasons are exercised.
    assert counts["ok"] > N_MUTANTS // 3, counts
    assert len(counts) >= 6, counts


def test_corrupted_folk_rnn_tunes_never_crash_the_reader(corpus_tunes):
    rng = random.Random(99)
    base = ("M:6/8 K:Cdor |: G 2 c c B c | B A B G 3 | (3 c d e f > g a /2 | c' 2 B, 4 :| "
            "|1 f d B :| |2 d e f ||").split()
    counts: collections.Counter = collections.Counter()
    for k in range(500):
        tokens = list(base)
        for _ in range(rng.randint(1, 5)):
            i = rng.randrange(len(tokens) + 1)
            action = rng.random()
            if action < 0.4 and tokens:
                del tokens[min(i, len(tokens) - 1)]
            elif action < 0.8:
                tokens.insert(i, rng.choice(base + ["M:3/4", "K:Cmix", "L:1/4", "x", "z", "[", "]", "<"]))
            else:
                rng.shuffle(tokens)
        text = " ".join(tokens)
        check_outcome(lambda: abc_reader.folk_rnn_tune_to_sequence(text, index=k), counts)
    assert sum(counts.values()) == 500 and counts["ok"] > 100, counts


abc_alphabet = st.sampled_from(ABC_SYMBOLS + list("ABCDEFGabcdefgz,'^_=/234 |:[]()<>-\n"))


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(body=st.lists(abc_alphabet, max_size=80).map("".join),
       meter=st.sampled_from(["4/4", "6/8", "C|", "2/4", "3/4", "none", "9/8", "x"]),
       key=st.sampled_from(["C", "G", "Ador", "F#m", "HP", "none", "Bbmix", "Q"]))
def test_generated_abc_never_crashes(body, meter, key):
    counts: collections.Counter = collections.Counter()
    text = f"X:1\nT:gen\nM:{meter}\nK:{key}\n{body}\n"
    check_outcome(lambda: abc_reader.abc_tune_to_sequence(text), counts)
    assert sum(counts.values()) == 1


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_crashes(text):
    counts: collections.Counter = collections.Counter()
    for tune in abc_reader.split_abc_book("X:1\n" + text) + [text]:
        check_outcome(lambda: abc_reader.abc_tune_to_sequence(tune), counts)
    for tune in abc_reader.split_folk_rnn(text):
        check_outcome(lambda: abc_reader.folk_rnn_tune_to_sequence(tune), counts)
    assert sum(counts.values()) >= 2


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_midi_bytes_never_crash(data):
    counts: collections.Counter = collections.Counter()
    check_outcome(lambda: midi_reader.midi_to_sequence(b"MThd" + data), counts)
    assert sum(counts.values()) == 1
