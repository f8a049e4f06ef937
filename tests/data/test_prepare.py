"""prepare: wire format, transpositions, splits, atomic and deterministic output, the CLI."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import subprocess
import sys

import note_seq
import numpy as np
import pytest
import tensorflow as tf

from music_attr_vae.data import attributes, loader, pipeline, prepare, schema, splits, writer

from music_attr_vae.data.codec import CODEC

HOLD_MARK, REST_MARK = CODEC.HOLD_MARK, CODEC.REST_MARK

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tf_example(tokens, attrs, tune_id, measure_index, transposition, num_transpositions) -> bytes:
    feature = {
        "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(t) for t in tokens])),
        "tune_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tune_id.encode()])),
        "measure_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(measure_index)])),
        "transposition": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(transposition)])),
        "num_transpositions": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(num_transpositions)])),
    }
    for j, name in enumerate(attributes.ATTRIBUTE_NAMES):
        feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(attrs[j])]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def _random_measures(n=64, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CODEC.vocab_size, (n, 24)).astype(np.int32)
    return tokens, attributes.compute_all(tokens), rng.integers(0, 300, n)  # 1- and 2-byte varints


# ------------------------------------------------------------------ wire format


@pytest.mark.parametrize("transposition,count", [(-12, 25), (3, 1), (0, 130)])  # negative shifts take 10 bytes
def test_hand_serialized_records_equal_tensorflow_serialization(transposition, count):
    tokens, values, bars = _random_measures()
    tune_id = "reels/é.abc#7"
    ours = writer.serialize_measures(tune_id, tokens, values, bars, transposition, count)
    assert len(ours) == len(tokens)
    for i, record in enumerate(ours):
        assert record == _tf_example(tokens[i], values[i], tune_id, bars[i], transposition, count), i


def test_crc32c_check_value_and_empty_input():
    # The standard CRC-32C check value of "123456789".
    assert int(writer.crc32c([b"123456789", b""])[0]) == 0xE3069283
    assert int(writer.crc32c([b""])[0]) == 0
    assert writer.frame_records([]) == []


def test_framed_records_equal_tfrecordwriter_output(tmp_path):
    tokens, values, bars = _random_measures(200, seed=1)
    records = writer.serialize_measures("t#0", tokens, values, bars, -2, 5) + [b"", b"x" * 1000]
    path = str(tmp_path / "ref.tfrecord")
    with tf.io.TFRecordWriter(path) as tf_writer:
        for r in records:
            tf_writer.write(r)
    with open(path, "rb") as f:
        assert f.read() == b"".join(writer.frame_records(records))


def test_summary_features_list_the_schema_and_loader_parses_it():
    assert set(schema.describe_features()) == set(schema.FEATURES) == set(loader.FEATURE_SPEC)
    assert schema.describe_features()["tokens"] == "int64[24]"


# ------------------------------------------------------------------ transpositions


def _grid(events):
    g = np.full(24, HOLD_MARK, np.int16)
    for tick, mark in events.items():
        g[tick] = mark
    return g


def test_measures_are_stored_once_and_expand_to_every_valid_shift():
    grids = np.stack([_grid({0: 60, 12: 64}), _grid({0: REST_MARK, 6: 72})])
    grids_out, idx, shifts, n_out = pipeline.select_measures(grids, np.array([0, 3]), max_shift=12)
    assert n_out == 0 and shifts == list(range(-5, 13))
    stored = pipeline.tune_measures(grids_out, idx, shifts)
    assert len(stored) == 2 and stored.shifts == tuple(range(-5, 13))
    assert stored.tokens[0, 0] == 60 - 5 - CODEC.min_pitch  # the lowest allowed key
    ex = stored.expand()
    assert len(ex) == 2 * 18
    # Ordered by measure, then shift.
    assert ex.measure_index.tolist() == [0] * 18 + [3] * 18
    assert ex.transposition.tolist() == shifts * 2
    assert ex.tokens[0, 0] == 60 - 5 - CODEC.min_pitch and ex.tokens[17, 0] == 60 + 12 - CODEC.min_pitch
    for i, s in enumerate(ex.transposition):  # each example is grids_to_tokens of its shift
        np.testing.assert_array_equal(ex.tokens[i], CODEC.grids_to_tokens(grids_out[i // 18], int(s)))
    # The attributes are transposition invariant, so storing them once loses nothing.
    np.testing.assert_allclose(ex.attributes, attributes.compute_all(ex.tokens))
    # max_shift=0 keeps the originals only.
    assert pipeline.select_measures(grids, np.array([0, 3]), max_shift=0)[2] == [0]


def test_tf_expansion_equals_numpy_expansion_on_real_tunes(nottingham_dir):
    """loader.expand_measures (the tf.data map) gives the examples TuneMeasures.expand enumerates."""
    from music_attr_vae.data import sources

    raw = sources.read_raw_tunes(sources.resolve_source(str(nottingham_dir / "reelsu-z.abc")))[:12]
    results = [r for r in pipeline.run_pipeline(raw, splits.tune_ids(raw), 12, serialize=False, progress=False) if r.kept]
    assert len(results) >= 8
    records = [rec for r in results for rec in writer.serialize_measures(
        r.tune_id, r.measures.tokens, r.measures.attributes, r.measures.measure_index, r.shifts[0], len(r.shifts))]
    got = loader.expand_measures(tf.io.parse_example(tf.constant(records), loader.FEATURE_SPEC))
    want = [r.examples for r in results]
    np.testing.assert_array_equal(got["tokens"].numpy(), np.concatenate([w.tokens for w in want]))
    np.testing.assert_array_equal(got["transposition"].numpy(), np.concatenate([w.transposition for w in want]))
    np.testing.assert_array_equal(got["measure_index"].numpy(), np.concatenate([w.measure_index for w in want]))
    attrs = np.stack([got[n].numpy() for n in attributes.ATTRIBUTE_NAMES], -1)
    np.testing.assert_allclose(attrs, attributes.compute_all(got["tokens"].numpy()), atol=1e-6)
    assert "num_transpositions" not in got


def test_out_of_range_measures_dropped_only_when_no_shift_fits():
    # 40..86 cannot fit 55..84 by any shift: the two measures outside the range go.
    grids = np.stack([_grid({0: 40}), _grid({0: 60, 6: 70}), _grid({0: 86}), _grid({0: 62})])
    kept, idx, shifts, n_out = pipeline.select_measures(grids, np.arange(4), max_shift=2)
    assert n_out == 2 and idx.tolist() == [1, 3]
    assert shifts == [-2, -1, 0, 1, 2]
    # A low tune that fits after a shift keeps every measure.
    low = np.stack([_grid({0: 50}), _grid({0: 60})])
    assert pipeline.select_measures(low, np.arange(2), max_shift=12)[3] == 0


# ------------------------------------------------------------------ splits


def test_split_assignment_is_seeded_exact_and_order_free():
    ids = [f"book{i % 7}.abc#{i}" for i in range(500)]
    a = splits.assign_splits(ids, (0.8, 0.1, 0.1), seed=3)
    b = splits.assign_splits(list(reversed(ids)), (0.8, 0.1, 0.1), seed=3)
    assert a == b
    counts = collections.Counter(a.values())
    assert counts == {"train": 400, "validation": 50, "test": 50}
    c = splits.assign_splits(ids, (0.8, 0.1, 0.1), seed=4)
    assert sum(a[t] != c[t] for t in ids) > 50
    # The assignment must not depend on Python's randomised str hash: another interpreter
    # with another hash seed makes the same one.
    code = (
        "from music_attr_vae.data import splits;"
        "print(sorted(k for k, v in splits.assign_splits([f't#{i}' for i in range(50)]).items() if v == 'test'))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    here = sorted(k for k, v in splits.assign_splits([f"t#{i}" for i in range(50)]).items() if v == "test")
    assert other == str(here)


def test_split_counts_small_corpora():
    assert splits.split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert splits.split_counts(3, (0.8, 0.1, 0.1)) == [1, 1, 1]
    assert splits.split_counts(5, (1.0, 0.0, 0.0)) == [5, 0, 0]
    assert sum(splits.split_counts(1031, (0.7, 0.2, 0.1))) == 1031


@pytest.mark.parametrize(
    "text,match",
    [("0.8,0.1", "needs 3"), ("a,b,c", "not three"), ("0.8,0.3,0.1", "sum to 1"), ("0,0.5,0.5", "train"),
     ("1.2,-0.1,-0.1", ">= 0")],
)
def test_bad_split_strings_name_the_split_flag(text, match):
    with pytest.raises(prepare.PrepareError, match=match) as err:
        splits.parse_split_fractions(text)
    assert err.value.param == "split"
    assert str(err.value).startswith("split:")


# ------------------------------------------------------------------ end to end on the small corpus


def test_summary_describes_the_prepared_small_dataset(prepared_small, small_abc_dir):
    summary = json.loads((prepared_small / "summary.json").read_text())
    assert summary["format_version"] == 2 and summary["features"] == schema.describe_features()
    assert "per_source" not in summary  # one source
    assert summary["vocabulary"] == CODEC.to_json()
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
        # On disk: one record per measure; the examples are its transpositions.
        records = sum(1 for _ in tf.data.TFRecordDataset(loader.shard_files(str(prepared_small), split)))
        assert records == summary["splits"][split]["measures"] < summary["splits"][split]["examples"]
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
            pitches = original[original < CODEC.num_pitches]
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
        assert s["shards"] == [schema.shard_name(split, i, 3) for i in range(3)]
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


# ------------------------------------------------------------------ several sources


def test_tune_digest_ignores_the_key_and_nothing_else(nottingham_dir):
    from music_attr_vae.data import sources

    raw = sources.read_raw_tunes(sources.resolve_source(str(nottingham_dir / "reelsu-z.abc")))[0]
    grids = CODEC.to_grids(sources.raw_tune_to_sequence(raw)).grids
    digest = pipeline.tune_digest(grids)
    shifted = np.where(grids >= 0, grids + 3, grids)
    assert pipeline.tune_digest(shifted) == digest
    changed = grids.copy()
    first_note = np.argwhere(changed >= 0)[5]
    changed[tuple(first_note)] += 1
    assert pipeline.tune_digest(changed) != digest
    assert pipeline.tune_digest(grids[:-1]) != digest


def test_source_lists_are_parsed_and_bad_ones_named(tmp_path):
    assert splits.split_sources("a,b") == ["a", "b"]
    assert splits.split_sources("folk_rnn") == ["folk_rnn"]
    odd = tmp_path / "with,comma"
    odd.mkdir()
    assert splits.split_sources(str(odd)) == [str(odd)]
    assert splits.source_labels(["/x/nottingham", "/y/nottingham/", "essen"]) == ["nottingham", "nottingham-2", "essen"]
    assert splits.source_labels(["tunes/*.abc", "tunes/**/x?.abc", "*.abc"]) == ["tunes", "tunes-2", "_.abc"]
    for text, match in [("a,,b", "empty entry"), ("a,a", "listed twice"), (",".join("abcdefghijklmnopqrstuvwxyz0123456"), "at most")]:
        with pytest.raises(prepare.PrepareError, match=match) as err:
            prepare.prepare(text, str(tmp_path / "out"), progress=False)
        assert err.value.param == "source"
    assert not (tmp_path / "out").exists()


def test_several_sources_keep_each_split_and_count_duplicates_once(prepared_small, small_abc_dir, nottingham_dir,
                                                                     tmp_path):
    """A second corpus (one new book, one book the first already holds) moves no tune of the first."""
    import shutil

    other = tmp_path / "other"
    other.mkdir()
    for name in ("reelsa-c.abc", "xmas.abc"):
        shutil.copy(nottingham_dir / name, other / name)
    both = prepare.prepare(f"{small_abc_dir},{other}", str(tmp_path / "both"), max_shift=2, progress=False)
    alone_other = prepare.prepare(str(other), str(tmp_path / "alone"), max_shift=2, progress=False)
    label_a, label_b = small_abc_dir.name, "other"
    split_of = {}
    for split in prepare.SPLITS:
        for tune in set(loader.load_arrays(str(tmp_path / "both"), split)["tune_id"].tolist()):
            split_of[tune] = split
    # The first source: exactly the tunes and splits of a single-source run, ids prefixed with its label.
    for split in prepare.SPLITS:
        for tune in set(loader.load_arrays(str(prepared_small), split)["tune_id"].tolist()):
            assert split_of.pop(f"{label_a}/{tune}") == split
    # The second: its xmas.abc tunes are the first source's, counted once as duplicate_tune ...
    per_source = {entry["label"]: entry for entry in both["per_source"]}
    n_xmas = sum(1 for t in split_of if "xmas.abc" in t)
    assert n_xmas == 0 and per_source[label_b]["skipped"]["duplicate_tune"] > 5
    assert both["dropped"]["tunes"]["duplicate_tune"] == per_source[label_b]["skipped"]["duplicate_tune"]
    assert all("same notes as " + label_a in d for d in both["dropped"]["tune_examples"]["duplicate_tune"])
    # ... and its other tunes keep the split they have when it is prepared alone.
    for split in prepare.SPLITS:
        alone = set(loader.load_arrays(str(tmp_path / "alone"), split)["tune_id"].tolist())
        for tune in alone:
            if not tune.startswith("xmas.abc"):
                assert split_of.pop(f"{label_b}/{tune}") == split
    assert split_of == {}
    # Per-source counts add up to the totals.
    assert sum(e["raw_tunes"] for e in both["per_source"]) == both["totals"]["raw_tunes"]
    assert sum(e["kept_tunes"] for e in both["per_source"]) == both["totals"]["kept_tunes"]
    for split in prepare.SPLITS:
        for key in ("tunes", "measures", "examples"):
            assert sum(e["splits"][split][key] for e in both["per_source"]) == both["splits"][split][key]
    assert per_source[label_b]["raw_tunes"] == alone_other["totals"]["raw_tunes"]


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
        tokens = np.full((4, 24), CODEC.hold, np.int32)
        for row in tokens:
            ticks = np.sort(rng.choice(np.arange(1, 24), size=5, replace=False))
            row[0] = rng.integers(5, 25)
            row[ticks] = rng.integers(5, 25, size=5)
            row[ticks[2]] = CODEC.rest
        note_seq.sequence_proto_to_midi_file(CODEC.to_sequence(tokens), str(corpus / f"tune{n}.mid"))
        written.append(tokens)
    summary = prepare.prepare(str(corpus), str(tmp_path / "out"), max_shift=0, progress=False)
    assert summary["totals"]["kept_tunes"] == 3 and summary["totals"]["examples"] == 12
    assert {s["kind"] for s in summary["sources"]} == {"midi"}
    got = np.concatenate([loader.load_arrays(str(tmp_path / "out"), s)["tokens"] for s in prepare.SPLITS])
    assert sorted(map(bytes, got.astype(np.uint8))) == sorted(map(bytes, np.concatenate(written).astype(np.uint8)))
