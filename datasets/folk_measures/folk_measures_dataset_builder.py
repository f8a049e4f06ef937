"""TFDS builder ``folk_measures``: single 4/4 folk-melody measures on a 24-tick grid.

The same records as ``music-attr-vae prepare``: one per measure (tokens in the
lowest allowed key, the four attributes, tune id, bar index, lowest
transposition and the number of allowed transpositions), with the feature
layout of ``music_attr_vae.data.schema``, built by the same per-tune pipeline
and split rule: nothing here re-implements parsing, transposition or
splitting, so a TFDS build and a ``prepare`` run with the same parameters hold
the same measures in the same splits.  ``music_attr_vae.data.loader.expand_measures``
turns a batch of them into every transposition.

Configs:

``folk_rnn``
    the folk-rnn ABC-token corpus, downloaded from ``sources.FOLK_RNN_URL``.
``local``
    ABC (``.abc``) and MIDI (``.mid``/``.midi``) files under ``manual_dir``,
    e.g. the Nottingham tune books; builds fully offline::

        builder = Builder(config="local", data_dir=DATA_DIR)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=ABC_DIR))

A custom :class:`FolkMeasuresConfig` (another ``max_shift``, seed or split)
can be passed as ``config=``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Tuple

import numpy as np
import tensorflow_datasets as tfds

from music_attr_vae.data import attributes, pipeline, schema, splits

from music_attr_vae.data.codec import CODEC


@dataclasses.dataclass(eq=False)
class FolkMeasuresConfig(tfds.core.BuilderConfig):
    """Where the tunes come from and how they are augmented and split."""

    source: str = "local"  # 'local' (manual_dir) or 'folk_rnn' (download)
    max_shift: int = 12
    seed: int = 0
    split_fractions: Tuple[float, float, float] = schema.DEFAULT_SPLIT_FRACTIONS


class Builder(tfds.core.GeneratorBasedBuilder):
    """Single measures of folk tunes, every valid transposition, split by tune."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: 24-tick measures, four attributes, split by tune.",
        "2.0.0": "One example per measure with its range of transpositions (num_transpositions).",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "For the `local` config, put ABC (.abc) and/or MIDI (.mid, .midi) files in manual_dir "
        "(subdirectories are read too), e.g. the Nottingham Music Database tune books."
    )
    BUILDER_CONFIGS = [
        FolkMeasuresConfig(name="folk_rnn", source="folk_rnn", description="The folk-rnn corpus (downloaded)."),
        FolkMeasuresConfig(name="local", source="local", description="ABC/MIDI files from manual_dir."),
    ]
    DEFAULT_CONFIG_NAME = "local"

    def _info(self) -> tfds.core.DatasetInfo:
        kinds = {"int64": np.int64, "float": np.float32}
        features = {
            key: tfds.features.Text() if kind == "bytes" else
            tfds.features.Tensor(shape=shape, dtype=kinds[kind]) if shape else tfds.features.Scalar(dtype=kinds[kind])
            for key, (kind, shape) in schema.FEATURES.items()
        }
        return self.dataset_info_from_configs(
            description=(
                "Single 4/4 measures of monophonic folk melodies as 24 tokens (MIDI 55-84 onsets, REST, "
                "HOLD), with rhythmic complexity, pitch range, note density and contour, stored in the lowest key "
                f"of the transpositions within +-{self.builder_config.max_shift} semitones that fit the range "
                "(num_transpositions of them, one semitone apart)."
            ),
            features=tfds.features.FeaturesDict(features),
            homepage="https://github.com/IraKorshunova/folk-rnn",
            metadata=tfds.core.MetadataDict(
                vocabulary=CODEC.to_json(), attribute_names=list(attributes.ATTRIBUTE_NAMES)
            ),
        )

    def _source_files(self, dl_manager):
        from music_attr_vae.data import sources

        config = self.builder_config
        if config.source == "local":
            return sources.resolve_source(os.fspath(dl_manager.manual_dir))
        if config.source == "folk_rnn":
            path = os.fspath(dl_manager.download(sources.FOLK_RNN_URL))
            return [sources.SourceFile(path=path, kind="folk_rnn", sha256=sources.sha256_file(path))]
        raise ValueError(f"unknown source {config.source!r} in config {config.name!r}; use 'local' or 'folk_rnn'")

    def _split_generators(self, dl_manager):
        from music_attr_vae.data import sources

        config = self.builder_config
        raw_tunes = sources.read_raw_tunes(self._source_files(dl_manager))
        results = pipeline.run_pipeline(
            raw_tunes, splits.tune_ids(raw_tunes), config.max_shift, serialize=False, progress=False
        )
        kept = [r for r in results if r.kept]
        split_of = splits.assign_splits([r.tune_id for r in kept], config.split_fractions, config.seed)
        return {
            split: self._generate_examples([r for r in kept if split_of[r.tune_id] == split])
            for split in schema.SPLITS
        }

    def _generate_examples(self, results):
        for result in results:
            m = result.measures
            for i in range(len(m)):
                record = {
                    schema.TOKENS_KEY: m.tokens[i].astype(np.int64),
                    schema.TUNE_ID_KEY: result.tune_id,
                    schema.MEASURE_INDEX_KEY: int(m.measure_index[i]),
                    schema.TRANSPOSITION_KEY: int(m.shifts[0]),
                    schema.NUM_TRANSPOSITIONS_KEY: len(m.shifts),
                }
                for j, name in enumerate(attributes.ATTRIBUTE_NAMES):
                    record[name] = float(m.attributes[i, j])
                yield f"{result.tune_id}/{int(m.measure_index[i])}", record
