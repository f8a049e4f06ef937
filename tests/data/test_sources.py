"""Sources: files, directories, globs, MIDI, and the folk-rnn download cache (served locally)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import pathlib
import shutil
import time

import note_seq
import pytest
from note_seq.protobuf import music_pb2

from http_helpers import serve
from music_attr_vae.data import midi_reader, sources
from music_attr_vae.data.abc_reader import SkipTune
from music_attr_vae.data.sources import RawTune, SourceError

FOLK_RNN_TEXT = (
    "M:4/4\nK:Cmaj\nC D E F G A B c | c B A G F E D C |\n\n"
    "M:6/8 K:Cmin |: G c c B c B :| c 6 |\n\n"
    "M:4/4 K:Cmix\n"
)


def write_midi(path: pathlib.Path, notes, qpm: float, signatures=((0.0, 4, 4),)) -> None:
    """Write (pitch, start_beat, end_beat) notes at ``qpm`` with note_seq."""
    beat = 60.0 / qpm
    seq = music_pb2.NoteSequence(ticks_per_quarter=220)
    seq.tempos.add(time=0.0, qpm=qpm)
    for t, num, den in signatures:
        seq.time_signatures.add(time=t * beat, numerator=num, denominator=den)
    for pitch, start, end in notes:
        seq.notes.add(pitch=pitch, start_time=start * beat, end_time=end * beat, velocity=90)
    seq.total_time = max(e for _, _, e in notes) * beat
    note_seq.sequence_proto_to_midi_file(seq, str(path))


def beats(seq):
    return [(n.pitch, round(n.start_time / 0.5, 3), round(n.end_time / 0.5, 3)) for n in seq.notes]


# ----------------------------------------------------------------------------- resolving sources


def test_directory_file_and_glob_sources(nottingham_dir, tmp_path):
    files = sources.resolve_source(str(nottingham_dir))
    names = [os.path.basename(f.path) for f in files]
    assert names == sorted(p.name for p in nottingham_dir.glob("*.abc"))
    assert all(f.kind == "abc" and os.path.isabs(f.path) for f in files)
    jigs = nottingham_dir / "jigs.abc"
    assert files[names.index("jigs.abc")].sha256 == hashlib.sha256(jigs.read_bytes()).hexdigest()

    single = sources.resolve_source(str(jigs))
    assert [os.path.realpath(f.path) for f in single] == [str(jigs.resolve())]
    globbed = sources.resolve_source(str(nottingham_dir / "reels*.abc"))
    assert len(globbed) == 6 and all("reels" in f.path for f in globbed)


def test_kinds_are_detected_from_content(tmp_path):
    (tmp_path / "book.txt").write_text("X:1\nT:a\nK:C\nCDEF|\n")
    (tmp_path / "tokens").write_text(FOLK_RNN_TEXT)
    write_midi(tmp_path / "song.bin", [(60, 0, 1)], qpm=120)
    kinds = {os.path.basename(f.path): f.kind for p in ("book.txt", "tokens", "song.bin")
             for f in sources.resolve_source(str(tmp_path / p))}
    assert kinds == {"book.txt": "abc", "tokens": "folk_rnn", "song.bin": "midi"}


def test_a_single_tune_file_without_an_x_line_is_read(tmp_path):
    """ABC 2.1 lets a file hold one tune with no X: field; it is read, not refused as 'no ABC tune'."""
    path = tmp_path / "tune.abc"
    path.write_text("T:No number\nM:4/4\nL:1/8\nK:G\nGABc dedB|dedB dedB|c2ec B2dB|A2A2 A4|\n")
    files = sources.resolve_source(str(path))
    assert [f.kind for f in files] == ["abc"]
    raw = sources.read_raw_tunes(files)
    assert len(raw) == 1
    sequence = sources.raw_tune_to_sequence(raw[0])
    assert [n.pitch for n in sequence.notes][:4] == [67, 69, 71, 72]  # G A B c in G major
    assert len(sequence.notes) == 25


def test_bad_sources_get_errors_that_name_them(tmp_path):
    missing = tmp_path / "nowhere" / "tunes.abc"
    with pytest.raises(SourceError, match="nowhere/tunes.abc"):
        sources.resolve_source(str(missing))
    junk = tmp_path / "notes.txt"
    junk.write_text("shopping list: eggs, milk\n")
    with pytest.raises(SourceError, match="notes.txt"):
        sources.resolve_source(str(junk))
    fake_midi = tmp_path / "fake.mid"
    fake_midi.write_bytes(b"RIFF0000")
    with pytest.raises(SourceError, match="fake.mid"):
        sources.resolve_source(str(fake_midi))
    empty_abc = tmp_path / "empty.abc"
    empty_abc.write_text("% nothing\n")
    with pytest.raises(SourceError, match="empty.abc"):
        sources.resolve_source(str(empty_abc))
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    with pytest.raises(SourceError, match="empty_dir"):
        sources.resolve_source(str(empty_dir))
    with pytest.raises(SourceError, match="zzz"):
        sources.resolve_source(str(tmp_path / "zzz*.abc"))


# ----------------------------------------------------------------------------- raw tunes


def test_read_raw_tunes_splits_every_tune_of_the_corpus(nottingham_dir):
    files = sources.resolve_source(str(nottingham_dir))
    raws = sources.read_raw_tunes(files)
    n_x = sum(p.read_text(encoding="latin-1").count("\nX:") + p.read_text(encoding="latin-1").startswith("X:")
              for p in nottingham_dir.glob("*.abc"))
    assert len(raws) == n_x
    assert {r.kind for r in raws} == {"abc"}
    jigs = [r for r in raws if r.origin.endswith("jigs.abc")]
    assert [r.index for r in jigs] == list(range(len(jigs)))
    seq = sources.raw_tune_to_sequence(jigs[2])
    assert seq.sequence_metadata.title == "The American Dwarf"
    assert seq.id == f"{jigs[2].origin}#2"
    assert hash(jigs[0]) == hash(RawTune(**jigs[0].__dict__))  # frozen, hashable, picklable value


def test_folk_rnn_file_source(tmp_path):
    path = tmp_path / "data_v2"
    path.write_text(FOLK_RNN_TEXT)
    raws = sources.read_raw_tunes(sources.resolve_source(str(path)))
    assert [r.kind for r in raws] == ["folk_rnn"] * 3
    first = sources.raw_tune_to_sequence(raws[0])
    assert [n.pitch for n in first.notes] == [60, 62, 64, 65, 67, 69, 71, 72, 72, 71, 69, 67, 65, 64, 62, 60]
    second = sources.raw_tune_to_sequence(raws[1])
    assert [n.pitch for n in second.notes][:6] == [67, 72, 72, 70, 72, 70]  # C minor: B flat
    assert len(second.notes) == 13
    with pytest.raises(SkipTune) as info:
        sources.raw_tune_to_sequence(raws[2])
    assert info.value.reason == "empty_tune"


# ----------------------------------------------------------------------------- MIDI


@pytest.mark.parametrize("qpm", [120.0, 90.0, 150.0])
def test_midi_round_trip_keeps_beats_and_time_signatures(tmp_path, qpm):
    notes = [(67, 0, 1), (69, 1, 1.5), (71, 1.5, 2), (72, 2, 4), (74, 4, 5.5), (76, 5.5, 6)]
    path = tmp_path / "tune.mid"
    write_midi(path, notes, qpm=qpm, signatures=((0.0, 3, 4), (3.0, 2, 4)))
    raws = sources.read_raw_tunes(sources.resolve_source(str(path)))
    assert [(r.kind, r.index) for r in raws] == [("midi", 0)]
    seq = sources.raw_tune_to_sequence(raws[0])
    assert beats(seq) == [(p, float(s), float(e)) for p, s, e in notes]
    assert [t.qpm for t in seq.tempos] == [120.0]
    assert [(round(ts.time / 0.5, 3), ts.numerator, ts.denominator) for ts in seq.time_signatures] == [
        (0.0, 3, 4), (3.0, 2, 4)]
    assert seq.sequence_metadata.title == "tune"


def test_midi_tempo_changes_are_followed(tmp_path):
    # 4 beats at 60 qpm (4 s), then 4 beats at 240 qpm (1 s).
    seq = music_pb2.NoteSequence(ticks_per_quarter=220)
    seq.tempos.add(time=0.0, qpm=60)
    seq.tempos.add(time=4.0, qpm=240)
    seq.notes.add(pitch=60, start_time=3.0, end_time=4.0, velocity=80)  # beat 3..4
    seq.notes.add(pitch=62, start_time=4.5, end_time=4.75, velocity=80)  # beat 6..7
    note_seq.sequence_proto_to_midi_file(seq, str(tmp_path / "t.mid"))
    out = midi_reader.midi_to_sequence((tmp_path / "t.mid").read_bytes())
    assert beats(out) == [(60, 3.0, 4.0), (62, 6.0, 7.0)]


def test_midi_skip_reasons(tmp_path):
    chords = [(60, 0, 1), (64, 0, 1), (62, 1, 2), (65, 1, 2), (64, 2, 3), (67, 2, 3)]
    write_midi(tmp_path / "poly.mid", chords, qpm=120)
    with pytest.raises(SkipTune) as info:
        midi_reader.midi_to_sequence((tmp_path / "poly.mid").read_bytes())
    assert info.value.reason == "midi_polyphonic"
    with pytest.raises(SkipTune) as info:
        midi_reader.midi_to_sequence(b"MThd" + b"\x00" * 40)
    assert info.value.reason == "bad_midi"


# ----------------------------------------------------------------------------- folk-rnn download


@contextlib.contextmanager
def serve_directory(directory: pathlib.Path):
    """A local HTTP server on 127.0.0.1 (never the internet); yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args, **kwargs: None
    with serve(handler) as base:
        yield base


def test_folk_rnn_download_is_cached_with_its_sha256(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    (served / "data_v2").write_text(FOLK_RNN_TEXT)
    cache = tmp_path / "cache"
    with serve_directory(served) as base:
        monkeypatch.setattr(sources, "FOLK_RNN_URL", f"{base}/data_v2")
        monkeypatch.setattr(sources, "FOLK_RNN_SHA256", hashlib.sha256(FOLK_RNN_TEXT.encode()).hexdigest())
        files = sources.resolve_source("folk_rnn", cache_dir=str(cache))
    assert len(files) == 1 and files[0].kind == "folk_rnn"
    path = pathlib.Path(files[0].path)
    assert path.parent == cache and path.read_text() == FOLK_RNN_TEXT
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["sha256"] == files[0].sha256 == hashlib.sha256(FOLK_RNN_TEXT.encode()).hexdigest()
    assert sorted(p.name for p in cache.iterdir()) == [path.name, path.name + ".json"]  # no temp files left
    # The server is gone: the cached copy is used without the network.
    again = sources.resolve_source("folk_rnn", cache_dir=str(cache))
    assert again[0].path == files[0].path and again[0].sha256 == files[0].sha256
    assert len(sources.read_raw_tunes(again)) == 3


def test_download_from_a_file_url(tmp_path):
    src = tmp_path / "data_v2"
    src.write_text(FOLK_RNN_TEXT)
    path = sources.fetch_folk_rnn(cache_dir=str(tmp_path / "cache"), url=src.as_uri(), allow_unverified=True)
    assert pathlib.Path(path).read_text() == FOLK_RNN_TEXT


def test_a_corrupted_cache_is_downloaded_again(tmp_path):
    src = tmp_path / "data_v2"
    src.write_text(FOLK_RNN_TEXT)
    cache = tmp_path / "cache"
    path = pathlib.Path(sources.fetch_folk_rnn(cache_dir=str(cache), url=src.as_uri(), allow_unverified=True))
    path.write_text("truncated")
    again = sources.fetch_folk_rnn(cache_dir=str(cache), url=src.as_uri(), allow_unverified=True)
    assert pathlib.Path(again).read_text() == FOLK_RNN_TEXT


def test_offline_download_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    with serve_directory(tmp_path) as base:
        dead_url = f"{base}/data_v2"
    # The server is shut down: nothing listens on that port any more.
    monkeypatch.setattr(sources, "FOLK_RNN_URL", dead_url)
    monkeypatch.setattr(sources, "FOLK_RNN_SHA256", "0" * 64)
    cache = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(SourceError) as info:
        sources.resolve_source("folk_rnn", cache_dir=str(cache))
    assert time.monotonic() - start < sources.DOWNLOAD_TIMEOUT_S + 2
    message = str(info.value)
    assert dead_url in message and "offline" in message and "--source=PATH" in message
    assert not any(cache.iterdir())  # nothing half-written


def test_missing_remote_file_is_a_source_error(tmp_path):
    with serve_directory(tmp_path) as base:
        with pytest.raises(SourceError, match="404"):
            sources.fetch_folk_rnn(cache_dir=str(tmp_path / "cache"), url=f"{base}/no_such_file", sha256="0" * 64)


def test_default_cache_dir_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert sources.default_cache_dir() == str(tmp_path / "elsewhere")
    monkeypatch.delenv(sources.CACHE_ENV)
    assert sources.default_cache_dir().endswith(os.path.join(".cache", "music_attr_vae"))


def test_unknown_raw_kind_is_an_error():
    with pytest.raises(SourceError, match="weird"):
        sources.raw_tune_to_sequence(RawTune("weird", "x.weird", 0, ""))


def test_copy_of_a_book_reads_like_the_original(nottingham_dir, tmp_path):
    shutil.copy(nottingham_dir / "xmas.abc", tmp_path / "xmas.abc")
    a = sources.read_raw_tunes(sources.resolve_source(str(tmp_path)))
    b = [r for r in sources.read_raw_tunes(sources.resolve_source(str(nottingham_dir))) if r.origin.endswith("xmas.abc")]
    assert [r.payload for r in a] == [r.payload for r in b]
