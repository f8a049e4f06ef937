"""prepare: wire format, transpositions, splits, atomic and deterministic output, the CLI."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.data import attributes, loader, measures, prepare
from music_attr_vae.data.measures import HOLD_MARK, REST_MARK

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tf_example(tokens, attrs, tune_id, measure_index, transposition) -> bytes:
    feature = {
        "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(t) for t in tokens])),
        "tune_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tune_id.encode()])),
        "measure_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(measure_index)])),
        "transposition": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(transposition)])),
    }
    for j, name in enumerate(attributes.ATTRIBUTE_NAMES):
        feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(attrs[j])]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def _random_examples(n=64, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, measures.VOCAB_SIZE, (n, 24)).astype(np.int32)
    return prepare.TuneExamples(
        tokens=tokens,
        attributes=attributes.compute_all(tokens),
        measure_index=rng.integers(0, 300, n),  # 1- and 2-byte varints
        transposition=rng.integers(-12, 13, n),  # negative ones take 10 bytes
    )


# ------------------------------------------------------------------ wire format


def test_hand_serialized_examples_equal_tensorflow_serialization():
    ex = _random_examples()
    tune_id = "reels/é.abc#7"
    ours = prepare.serialize_examples(tune_id, ex)
    for i, record in enumerate(ours):
        expected = _tf_example(ex.tokens[i], ex.attributes[i], tune_id, ex.measure_index[i], ex.transposition[i])
        assert record == expected, i


def test_crc32c_check_value_and_empty_input():
    # The standard CRC-32C check value of "123456789".
    assert int(prepare.crc32c([b"123456789", b""])[0]) == 0xE3069283
    assert int(prepare.crc32c([b""])[0]) == 0
    assert prepare.frame_records([]) == []


def test_framed_records_equal_tfrecordwriter_output(tmp_path):
    records = prepare.serialize_examples("t#0", _random_examples(200, seed=1)) + [b"", b"x" * 1000]
    path = str(tmp_path / "ref.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for r in records:
            writer.write(r)
    with open(path, "rb") as f:
        assert f.read() == b"".join(prepare.frame_records(records))


# ------------------------------------------------------------------ transpositions


def _grid(events):
    g = np.full(24, HOLD_MARK, np.int16)
    for tick, mark in events.items():
        g[tick] = mark
    return g


def test_examples_cover_every_measure_times_every_valid_shift():
    grids = np.stack([_grid({0: 60, 12: 64}), _grid({0: REST_MARK, 6: 72})])
    grids_out, idx, shifts, n_out = prepare.select_measures(grids, np.array([0, 3]), max_shift=12)
    assert n_out == 0 and shifts == list(range(-5, 13))
    ex = prepare.tune_examples(grids_out, idx, shifts)
    assert len(ex) == 2 * 18
    # Ordered by measure, then shift.
    assert ex.measure_index.tolist() == [0] * 18 + [3] * 18
    assert ex.transposition.tolist() == shifts * 2
    assert ex.tokens[0, 0] == 60 - 5 - measures.MIN_PITCH and ex.tokens[17, 0] == 60 + 12 - measures.MIN_PITCH
    np.testing.assert_allclose(ex.attributes, attributes.compute_all(ex.tokens))
    # max_shift=0 keeps the originals only.
    assert prepare.select_measures(grids, np.array([0, 3]), max_shift=0)[2] == [0]


def test_out_of_range_measures_dropped_only_when_no_shift_fits():
    # 40..86 cannot fit 55..84 by any shift: the two measures outside the range go.
    grids = np.stack([_grid({0: 40}), _grid({0: 60, 6: 70}), _grid({0: 86}), _grid({0: 62})])
    kept, idx, shifts, n_out = prepare.select_measures(grids, np.arange(4), max_shift=2)
    assert n_out == 2 and idx.tolist() == [1, 3]
    assert shifts == [-2, -1, 0, 1, 2]
    # A low tune that fits after a shift keeps every measure.
    low = np.stack([_grid({0: 50}), _grid({0: 60})])
    assert prepare.select_measures(low, np.arange(2), max_shift=12)[3] == 0


# ------------------------------------------------------------------ splits


def test_split_assignment_is_seeded_exact_and_order_free():
    ids = [f"book{i % 7}.abc#{i}" for i in range(500)]
    a = prepare.assign_splits(ids, (0.8, 0.1, 0.1), seed=3)
    b = prepare.assign_splits(list(reversed(ids)), (0.8, 0.1, 0.1), seed=3)
    assert a == b
    counts = collections.Counter(a.values())
    assert counts == {"train": 400, "validation": 50, "test": 50}
    c = prepare.assign_splits(ids, (0.8, 0.1, 0.1), seed=4)
    assert sum(a[t] != c[t] for t in ids) > 50
    # The assignment must not depend on Python's randomised str hash: another interpreter
    # with another hash seed makes the same one.
    code = (
        "from music_attr_vae.data import prepare;"
        "print(sorted(k for k, v in prepare.assign_splits([f't#{i}' for i in range(50)]).items() if v == 'test'))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    here = sorted(k for k, v in prepare.assign_splits([f"t#{i}" for i in range(50)]).items() if v == "test")
    assert other == str(here)


def test_split_counts_small_corpora():
    assert prepare.split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert prepare.split_counts(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert prepare.split_counts(5, (1.0, 0.0, 0.0)) == [5, 0, 0]
    assert sum(prepare.split_counts(1031, (0.7, 0.2, 0.1))) == 1031


@pytest.mark.parametrize(
    "text,match",
    [("0.8,0.1", "needs 3"), ("a,b,c", "not three"), ("0.8,0.3,0.1", "sum to 1"), ("0,0.5,0.5", "train"),
     ("1.2,-0.1,-0.1", ">= 0")],
)
def test_bad_split_strings_name_the_split_flag(text, match):
    with pytest.raises(prepare.PrepareError, match=match) as err:
        prepare.parse_split_fractions(text)
    assert err.value.param == "split"
    assert str(err.value).startswith("split:")


# ------------------------------------------------------------------ end to end on the small corpus


def test_summary_describes_the_prepared_small_dataset(prepared_small, small_abc_dir):
    summary = json.loads((prepared_small / "summary.json").read_text())
    assert summary["vocabulary"] == measures.vocabulary()
    assert summary["attribute_names"] == list(attributes.ATTRIBUTE_NAMES)
    assert summary["parameters"]["max_shift"] == 2 and summary["parameters"]["seed"] == 0
    # Source files with their sha256.
    by_name = {os.path.basename(s["path"]): s for s in summary["sources"]}
    assert set(by_name) == {"reelsu-z.abc", "xmas.abc"}
    for name, entry in by_name.items():
        assert entry["sha256"] == hashlib.sha256((small_abc_dir / name).read_bytes()).hexdigest()
    # Counts add up, every split has tunes, and the shards listed exist with the right names.
    totals = summary["totals"]
    assert totals["kept_tunes"] + totals["skipped_tunes"] == totals["raw_tunes"]
    for key in ("tunes", "measures", "examples"):
        per_split = [summary["splits"][s][key] for s in prepare.SPLITS]
        assert min(per_split) > 0
        assert sum(per_split) == (totals["kept_tunes"] if key == "tunes" else totals[key])
    on_disk = sorted(p.name for p in prepared_small.glob("*.tfrecord-*"))
    listed = sorted(n for s in prepare.SPLITS for n in summary["splits"][s]["shards"])
    assert on_disk == listed
    assert all(re.fullmatch(r"(train|validation|test)\.tfrecord-\d{5}-of-\d{5}", n) for n in on_disk)
    # Drops by reason at both levels; the 4/4-only grid drops measures of other meters in xmas.abc.
    drops = summary["dropped"]
    assert drops["measures"]["not_4_4"] > 0 and drops["tunes"]
    assert all(isinstance(v, int) and v > 0 for level in ("tunes", "measures") for v in drops[level].values())
    # Each tune-level reason lists a few of its tunes.
    assert set(drops["tune_examples"]) == set(drops["tunes"])
    assert all(1 <= len(v) <= min(5, drops["tunes"][k]) for k, v in drops["tune_examples"].items())
    stats = summary["splits"]["train"]["attributes"]
    assert set(stats) == set(attributes.ATTRIBUTE_NAMES)
    assert all(s["min"] <= s["mean"] <= s["max"] for s in stats.values())


def test_shards_hold_every_valid_transposition_of_each_tune(prepared_small):
    summary = loader.load_summary(str(prepared_small))
    seen_tunes = {}
    for split in prepare.SPLITS:
        arrays = loader.load_arrays(str(prepared_small), split)
        assert len(arrays["tokens"]) == summary["splits"][split]["examples"]
        np.testing.assert_allclose(arrays["attributes"], attributes.compute_all(arrays["tokens"]), atol=1e-6)
        stats = summary["splits"][split]["attributes"]
        for j, name in enumerate(attributes.ATTRIBUTE_NAMES):
            column = arrays["attributes"][:, j].astype(np.float64)
            got = [stats[name][k] for k in ("min", "max", "mean")]
            np.testing.assert_allclose(got, [column.min(), column.max(), column.mean()], atol=2e-6)
        by_tune = collections.defaultdict(list)
        for i, tune in enumerate(arrays["tune_id"]):
            by_tune[tune].append(i)
        assert len(by_tune) == summary["splits"][split]["tunes"]
        for tune, rows in by_tune.items():
            assert tune not in seen_tunes, f"{tune} is in {seen_tunes.get(tune)} and {split}"
            seen_tunes[tune] = split
            rows = np.array(rows)
            shifts = set(arrays["transposition"][rows].tolist())
            bars = set(arrays["measure_index"][rows].tolist())
            # Every kept bar appears once per shift...
            assert len(rows) == len(shifts) * len(bars)
            # ...and the shifts are exactly those in [-2, 2] keeping the tune in 55..84.
            original = arrays["tokens"][rows][arrays["transposition"][rows] == 0]
            pitches = original[original < measures.NUM_PITCHES]
            expected = {s for s in range(-2, 3) if pitches.min() + s >= 0 and pitches.max() + s <= 29}
            assert shifts == expected, tune


def test_prepare_is_deterministic_across_runs_and_jobs(prepared_small, small_abc_dir, tmp_path):
    again = tmp_path / "again"
    summary = prepare.prepare(str(small_abc_dir), str(again), max_shift=2, seed=0, jobs=2, progress=False)
    assert summary["data_dir"] == str(again)
    first = {p.name: p.read_bytes() for p in prepared_small.glob("*.tfrecord-*")}
    second = {p.name: p.read_bytes() for p in again.glob("*.tfrecord-*")}
    assert first == second
    # A different seed reshuffles the examples (and the split assignment).
    other = prepare.prepare(str(small_abc_dir), str(tmp_path / "other"), max_shift=2, seed=1, progress=False)
    assert other["totals"]["examples"] == summary["totals"]["examples"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "other").glob("*.tfrecord-*")} != first


def test_max_shift_zero_and_num_shards(small_abc_dir, tmp_path):
    summary = prepare.prepare(str(small_abc_dir), str(tmp_path / "orig"), max_shift=0, num_shards=3, progress=False)
    for split in prepare.SPLITS:
        s = summary["splits"][split]
        assert s["examples"] == s["measures"]
        assert s["shards"] == [prepare.shard_name(split, i, 3) for i in range(3)]
    arrays = loader.load_arrays(str(tmp_path / "orig"), "train")
    assert set(arrays["transposition"].tolist()) == {0}


def test_output_is_atomic_and_errors_name_the_bad_argument(prepared_small, small_abc_dir, tmp_path):
    from music_attr_vae.data import sources

    # A prepared directory given as source is returned as is; nothing is written.
    summary = prepare.prepare(str(prepared_small), str(tmp_path / "unused"), progress=False)
    assert summary["data_dir"] == str(prepared_small) and not (tmp_path / "unused").exists()

    missing = tmp_path / "no_such_corpus"
    with pytest.raises(sources.SourceError, match="no_such_corpus"):
        prepare.prepare(str(missing), str(tmp_path / "out"), progress=False)
    with pytest.raises(prepare.PrepareError, match="output_dir.*does not exist"):
        prepare.prepare(str(small_abc_dir), str(tmp_path / "a" / "b"), progress=False)
    for kwargs, param in [({"max_shift": -1}, "max_shift"), ({"num_shards": 0}, "num_shards"),
                          ({"split_fractions": (0.5, 0.5)}, "split"), ({"jobs": 0}, "jobs")]:
        with pytest.raises(prepare.PrepareError) as err:
            prepare.prepare(str(small_abc_dir), str(tmp_path / "out"), progress=False, **kwargs)
        assert err.value.param == param
    # A non-empty directory that is not a dataset is never overwritten.
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(prepare.PrepareError, match="refusing to replace"):
        prepare.prepare(str(small_abc_dir), str(precious), max_shift=0, progress=False)
    assert (precious / "notes.txt").read_text() == "keep me"
    # An existing dataset is replaced; no temp directory is left behind.
    target = tmp_path / "data"
    prepare.prepare(str(small_abc_dir), str(target), max_shift=0, progress=False)
    prepare.prepare(str(small_abc_dir), str(target), max_shift=1, progress=False)
    assert loader.load_summary(str(target))["parameters"]["max_shift"] == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not (tmp_path / "out").exists()


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "music_attr_vae", "prepare", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )


def test_cli_prints_counts_and_names_bad_flags(small_abc_dir, tmp_path):
    out = tmp_path / "cli"
    # --jobs=2 in a process without TF: forked workers (pytest has TF loaded, so its pools use a forkserver).
    done = _cli(f"--source={small_abc_dir}", f"--output_dir={out}", "--max_shift=1", "--noprogress", "--jobs=2")
    assert done.returncode == 0, done.stderr
    summary = loader.load_summary(str(out))
    prepare.prepare(str(small_abc_dir), str(tmp_path / "inproc"), max_shift=1, jobs=1, progress=False)
    for shard in summary["splits"]["train"]["shards"]:
        assert (out / shard).read_bytes() == (tmp_path / "inproc" / shard).read_bytes()
    for split in prepare.SPLITS:
        s = summary["splits"][split]
        assert re.search(rf"^{split}\s+{s['tunes']}\s+{s['measures']}\s+{s['examples']}$", done.stdout, re.M)
    assert "dropped measures:" in done.stdout and "not_4_4=" in done.stdout

    bad_source = _cli(f"--source={tmp_path / 'nowhere.abc'}", f"--output_dir={tmp_path / 'x'}", "--jobs=1")
    assert bad_source.returncode != 0
    assert "--source" in bad_source.stderr and "nowhere.abc" in bad_source.stderr
    bad_split = _cli(f"--source={small_abc_dir}", f"--output_dir={tmp_path / 'x'}", "--split=0.9,0.2", "--jobs=1")
    assert bad_split.returncode != 0 and "--split" in bad_split.stderr
    bad_out = _cli(f"--source={small_abc_dir}", f"--output_dir={tmp_path / 'no' / 'x'}", "--jobs=1")
    assert bad_out.returncode != 0 and "--output_dir" in bad_out.stderr
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ the whole corpus


def _header_meter(payload) -> str:
    match = re.search(r"^M:\s*(\S+)", payload if isinstance(payload, str) else "", re.M)
    return match.group(1) if match else ""


def test_whole_corpus_keeps_at_least_95_percent_of_four_four_tunes(nottingham_dir, tmp_path):
    from music_attr_vae.data import sources

    summary = prepare.prepare(str(nottingham_dir), str(tmp_path / "all"), max_shift=0, progress=False)
    raw = sources.read_raw_tunes(sources.resolve_source(str(nottingham_dir)))
    four_four = {tid for tid, r in zip(prepare.tune_ids(raw), raw) if _header_meter(r.payload) in ("4/4", "C", "C|", "2/2")}
    kept = set()
    for split in prepare.SPLITS:
        kept.update(loader.load_arrays(str(tmp_path / "all"), split)["tune_id"].tolist())
    assert len(four_four) > 300
    assert len(kept & four_four) >= 0.95 * len(four_four), summary["dropped"]


def test_midi_sources_round_trip_through_prepare(tmp_path):
    """Token measures written as MIDI files come back unchanged as examples (max_shift=0)."""
    rng = np.random.default_rng(5)
    corpus = tmp_path / "midi"
    corpus.mkdir()
    written = []
    for n in range(3):
        tokens = np.full((4, 24), measures.HOLD, np.int32)
        for row in tokens:
            ticks = np.sort(rng.choice(np.arange(1, 24), size=5, replace=False))
            row[0] = rng.integers(5, 25)
            row[ticks] = rng.integers(5, 25, size=5)
            row[ticks[2]] = measures.REST
        measures.tokens_to_midi_file(tokens, str(corpus / f"tune{n}.mid"))
        written.append(tokens)
    summary = prepare.prepare(str(corpus), str(tmp_path / "out"), max_shift=0, progress=False)
    assert summary["totals"]["kept_tunes"] == 3 and summary["totals"]["examples"] == 12
    assert {s["kind"] for s in summary["sources"]} == {"midi"}
    got = np.concatenate([loader.load_arrays(str(tmp_path / "out"), s)["tokens"] for s in prepare.SPLITS])
    assert sorted(map(bytes, got.astype(np.uint8))) == sorted(map(bytes, np.concatenate(written).astype(np.uint8)))
