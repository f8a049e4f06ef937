"""Records -> bytes: ``tf.train.Example`` wire format, TFRecord framing, shard files.

**Why no TensorFlow here.**  Importing TF costs ~5 s, more than the whole
parse of the Nottingham corpus, so examples are serialised by hand in the
protobuf wire format (byte-identical to
``tf.train.Example.SerializeToString(deterministic=True)``, checked by the
tests) and framed as TFRecords with a NumPy CRC32C that checksums many records
at once.  ``music-attr-vae prepare`` therefore starts fast, and so do its
worker processes.
"""

from __future__ import annotations

import math
import os
import struct
from typing import List, Optional, Sequence

import numpy as np

from music_attr_vae.data import attributes, schema

from music_attr_vae.data.codec import CODEC

# Default shard size target, in bytes of serialized records.
TARGET_SHARD_BYTES = 16 * 1024 * 1024
MAX_DEFAULT_SHARDS = 16


def _varint(value: int) -> bytes:
    """Protobuf varint of an int64 (negative numbers take 10 bytes, as in protobuf)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field_tag: int, payload: bytes) -> bytes:
    return bytes([field_tag]) + _varint(len(payload)) + payload


def _map_entry(key: str, feature: bytes) -> bytes:
    """One ``Features.feature`` map entry (field 1 of Features)."""
    body = _length_delimited(0x0A, key.encode("utf-8")) + _length_delimited(0x12, feature)
    return _length_delimited(0x0A, body)


def _int64_feature(values: Sequence[int]) -> bytes:
    packed = b"".join(_varint(int(v)) for v in values)
    return _length_delimited(0x1A, _length_delimited(0x0A, packed))


def _float_feature(packed_le_float32: bytes) -> bytes:
    return _length_delimited(0x12, _length_delimited(0x0A, packed_le_float32))


def _bytes_feature(value: bytes) -> bytes:
    return _length_delimited(0x0A, _length_delimited(0x0A, value))


def _constant_prefix(key: str, feature_payload_len: int, make_feature) -> bytes:
    """Bytes of a map entry up to its variable payload (for fixed-size payloads)."""
    entry = _map_entry(key, make_feature(b"\0" * feature_payload_len))
    return entry[: len(entry) - feature_payload_len]


_FLOAT_PREFIX = {name: _constant_prefix(name, 4, _float_feature) for name in attributes.ATTRIBUTE_NAMES}
_TOKENS_PREFIX = _constant_prefix(
    schema.TOKENS_KEY, CODEC.ticks_per_measure, lambda b: _length_delimited(0x1A, _length_delimited(0x0A, b))
)
# Protobuf's deterministic serialisation writes map entries sorted by key.
_KEY_ORDER = sorted(schema.FEATURES)


def serialize_measures(tune_id: str, tokens: np.ndarray, attribute_values: np.ndarray, measure_index: Sequence[int],
                       transposition: int, num_transpositions: int) -> List[bytes]:
    """Serialised ``tf.train.Example`` of every measure of a tune (the record layout of :mod:`.schema`).

    ``tokens`` (M, 24) are the measures in the lowest allowed key
    (``transposition``), ``attribute_values`` (M, 4).  The bytes equal
    ``tf.train.Example(...).SerializeToString(deterministic=True)``; tokens
    (0..31) are one varint byte each, so they are copied straight from a uint8 array.
    """
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 128):
        raise ValueError("tokens must lie in 0..127 to be written as one-byte varints")
    n_ticks = CODEC.ticks_per_measure
    n_attrs = len(attributes.ATTRIBUTE_NAMES)
    token_bytes = np.ascontiguousarray(tokens, dtype=np.uint8).tobytes()
    attr_bytes = np.ascontiguousarray(attribute_values, dtype="<f4").tobytes()
    parts = {
        schema.TUNE_ID_KEY: _map_entry(schema.TUNE_ID_KEY, _bytes_feature(tune_id.encode("utf-8"))),
        schema.TRANSPOSITION_KEY: _map_entry(schema.TRANSPOSITION_KEY, _int64_feature([int(transposition)])),
        schema.NUM_TRANSPOSITIONS_KEY: _map_entry(schema.NUM_TRANSPOSITIONS_KEY,
                                                  _int64_feature([int(num_transpositions)])),
    }
    out = []
    for i in range(len(tokens)):
        parts[schema.TOKENS_KEY] = _TOKENS_PREFIX + token_bytes[i * n_ticks : (i + 1) * n_ticks]
        parts[schema.MEASURE_INDEX_KEY] = _map_entry(schema.MEASURE_INDEX_KEY, _int64_feature([int(measure_index[i])]))
        for j, name in enumerate(attributes.ATTRIBUTE_NAMES):
            at = (i * n_attrs + j) * 4
            parts[name] = _FLOAT_PREFIX[name] + attr_bytes[at : at + 4]
        body = b"".join([parts[k] for k in _KEY_ORDER])
        out.append(b"\x0a" + _varint(len(body)) + body)
    return out


# ------------------------------------------------------------------ TFRecord framing


def _crc32c_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(records: Sequence[bytes]) -> np.ndarray:
    """CRC32C (Castagnoli) of many byte strings at once, as uint32.

    Records of equal length are checksummed together, one NumPy step per byte
    position, so the Python overhead is per distinct length, not per byte.
    """
    out = np.zeros(len(records), np.uint32)
    if not records:
        return out
    lengths = np.fromiter((len(r) for r in records), np.int64, len(records))
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        crc = np.full(len(idx), 0xFFFFFFFF, np.uint32)
        if length:
            joined = b"".join([records[i] for i in idx])
            columns = np.frombuffer(joined, np.uint8).reshape(len(idx), int(length)).T.copy()
            for column in columns:
                crc = _CRC_TABLE[(crc ^ column) & 0xFF] ^ (crc >> 8)
        out[idx] = crc ^ np.uint32(0xFFFFFFFF)
    return out


def masked_crc32c(records: Sequence[bytes]) -> np.ndarray:
    """The masked CRC that TFRecord stores: rotate right by 15, add 0xa282ead8."""
    crc = crc32c(records).astype(np.uint64)
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    return ((rotated + 0xA282EAD8) & 0xFFFFFFFF).astype(np.uint32)


def frame_records(payloads: Sequence[bytes]) -> List[bytes]:
    """TFRecord framing: length (u64 LE), masked CRC of the length, payload, masked CRC of the payload."""
    if not payloads:
        return []
    headers = [struct.pack("<Q", len(p)) for p in payloads]
    header_crc = masked_crc32c(headers)
    payload_crc = masked_crc32c(payloads)
    return [
        h + struct.pack("<I", int(hc)) + p + struct.pack("<I", int(pc))
        for h, hc, p, pc in zip(headers, header_crc, payloads, payload_crc)
    ]




# ------------------------------------------------------------------ shards


def default_num_shards(total_bytes: int) -> int:
    return int(min(MAX_DEFAULT_SHARDS, max(1, math.ceil(total_bytes / TARGET_SHARD_BYTES))))


def write_split(directory: str, split: str, records: List[bytes], seed: int, num_shards: Optional[int]) -> List[str]:
    """Shuffle a split's framed records with a generator seeded by (seed, split) and write contiguous shards.

    Returns the shard file names.  The same records, seed and ``num_shards`` give byte-identical files.
    """
    rng = np.random.default_rng([seed, schema.SPLITS.index(split)])
    order = rng.permutation(len(records))
    total = sum(len(r) for r in records)
    count = num_shards if num_shards is not None else default_num_shards(total)
    count = max(1, min(count, len(records))) if records else 1
    names = []
    for index, part in enumerate(np.array_split(order, count)):
        name = schema.shard_name(split, index, count)
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"".join([records[i] for i in part]))
        names.append(name)
    return names
