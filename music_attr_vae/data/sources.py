"""``--source`` -> source files -> raw tunes -> NoteSequences; the folk-rnn download cache.

A source is one of

* a file: an ABC tune book (``.abc``, or any text with ``X:`` lines), a folk-rnn
  token file (``M:4/4 K:Cmaj ...`` tunes separated by blank lines), or a MIDI
  file (``.mid``/``.midi``, or anything starting with ``MThd``);
* a directory: every ``.abc``/``.mid``/``.midi`` file below it (recursively);
* a glob (``corpus/*.abc``);
* ``folk_rnn``: the folk-rnn ``data_v2`` corpus (Sturm et al. 2016), downloaded
  once from :data:`FOLK_RNN_URL` into the cache directory (default
  ``~/.cache/music_attr_vae``, or ``$MUSIC_ATTR_VAE_CACHE``).  The download is
  written atomically and its sha256 is recorded beside it; offline it fails
  within :data:`DOWNLOAD_TIMEOUT_S` seconds with a message pointing to
  ``--source=PATH``.

Splitting files into raw tunes (:func:`read_raw_tunes`) is cheap and done in
the main process; parsing (:func:`raw_tune_to_sequence`) is the expensive part
and runs in workers, so :class:`RawTune` is a small picklable value.

MIDI files are read by :mod:`music_attr_vae.data.midi_reader` (melody
selection, onset quantisation, bar phase); ``RawTune.options`` carries its
keyword arguments (e.g. ``melody_track``) from ``prepare`` to the workers.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from typing import List, Optional, Sequence, Tuple, Union

from note_seq.protobuf import music_pb2

from music_attr_vae.data import abc_reader, midi_reader

FOLK_RNN_URL = "https://raw.githubusercontent.com/IraKorshunova/folk-rnn/master/data/data_v2"
FOLK_RNN_SOURCE = "folk_rnn"
FOLK_RNN_FILENAME = "folk_rnn_data_v2.txt"
CACHE_ENV = "MUSIC_ATTR_VAE_CACHE"
DOWNLOAD_TIMEOUT_S = 10.0
KINDS = ("abc", "folk_rnn", "midi")
ABC_EXTENSIONS = (".abc",)
MIDI_EXTENSIONS = (".mid", ".midi")


class SourceError(ValueError):
    """A source that cannot be read at all (missing path, not ABC/MIDI, failed download)."""


@dataclasses.dataclass
class SourceFile:
    """One input file: absolute path, kind (``abc``, ``folk_rnn``, ``midi``) and content sha256."""

    path: str
    kind: str
    sha256: str


@dataclasses.dataclass(frozen=True)
class RawTune:
    """One unparsed tune: ABC or folk-rnn text, or MIDI bytes; ``origin`` is its file's path.

    ``options``: sorted ``(name, value)`` keyword arguments of the MIDI reader.
    """

    kind: str
    origin: str
    index: int
    payload: Union[str, bytes]
    options: Tuple[Tuple[str, object], ...] = ()


# ----------------------------------------------------------------------------- files and kinds


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Latin-1 (old tune books)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _looks_like_abc(text: str) -> bool:
    return any(line.startswith("X:") for line in text.splitlines())


def _looks_like_folk_rnn(text: str) -> bool:
    tunes = abc_reader.split_folk_rnn(text[:200_000])
    if not tunes:
        return False
    first = tunes[0].split()
    return len(first) >= 3 and any(t.startswith("K:") for t in first[:4])


def detect_kind(path: str) -> str:
    """``abc``, ``folk_rnn`` or ``midi`` from the extension and the content; SourceError otherwise."""
    with open(path, "rb") as f:
        head = f.read(4)
    ext = os.path.splitext(path)[1].lower()
    if head == b"MThd":
        return "midi"
    if ext in MIDI_EXTENSIONS:
        raise SourceError(f"{path}: not a MIDI file (no MThd header)")
    with open(path, "rb") as f:
        text = decode_text(f.read(4_000_000))
    if "\x00" in text[:4096]:
        raise SourceError(f"{path}: a binary file that is neither ABC nor MIDI")
    if _looks_like_abc(text):
        return "abc"
    if _looks_like_folk_rnn(text):
        return "folk_rnn"
    if ext in ABC_EXTENSIONS:
        raise SourceError(f"{path}: no ABC tune in this file (no X: line)")
    raise SourceError(f"{path}: not an ABC tune book, a folk-rnn token file or a MIDI file")


def _source_file(path: str) -> SourceFile:
    path = os.path.abspath(path)
    return SourceFile(path=path, kind=detect_kind(path), sha256=sha256_file(path))


def _directory_files(directory: str) -> List[str]:
    found = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(ABC_EXTENSIONS + MIDI_EXTENSIONS):
                found.append(os.path.join(root, name))
    return found


def resolve_source(source: str, cache_dir: Optional[str] = None) -> List[SourceFile]:
    """The files a ``--source`` value stands for (see the module docstring); raises SourceError."""
    source = str(source)
    if source == FOLK_RNN_SOURCE:
        return [_source_file(fetch_folk_rnn(cache_dir))]
    if os.path.isdir(source):
        paths = _directory_files(source)
        if not paths:
            raise SourceError(f"source directory {source!r} holds no .abc, .mid or .midi file")
        return [_source_file(p) for p in paths]
    if os.path.isfile(source):
        return [_source_file(source)]
    if any(ch in source for ch in "*?["):
        paths = sorted(p for p in globlib.glob(source, recursive=True) if os.path.isfile(p))
        if not paths:
            raise SourceError(f"source glob {source!r} matches no file")
        return [_source_file(p) for p in paths]
    raise SourceError(
        f"source {source!r} does not exist (expected an ABC/folk-rnn/MIDI file, a directory, a glob "
        f"or {FOLK_RNN_SOURCE!r})"
    )


# ----------------------------------------------------------------------------- raw tunes


def read_raw_tunes(files: Sequence[SourceFile]) -> List[RawTune]:
    """Split every source file into raw tunes (no parsing yet)."""
    tunes: List[RawTune] = []
    for sf in files:
        if sf.kind == "midi":
            with open(sf.path, "rb") as f:
                tunes.append(RawTune("midi", sf.path, 0, f.read()))
            continue
        with open(sf.path, "rb") as f:
            text = decode_text(f.read())
        if sf.kind == "abc":
            parts = abc_reader.split_abc_book(text)
        elif sf.kind == "folk_rnn":
            parts = abc_reader.split_folk_rnn(text)
        else:
            raise SourceError(f"{sf.path}: unknown source kind {sf.kind!r} (expected one of {KINDS})")
        tunes.extend(RawTune(sf.kind, sf.path, i, part) for i, part in enumerate(parts))
    return tunes


def raw_tune_to_sequence(raw: RawTune) -> music_pb2.NoteSequence:
    """Parse one raw tune into a qpm-120 NoteSequence; raises SkipTune for tunes to count and skip."""
    if raw.kind == "abc":
        return abc_reader.abc_tune_to_sequence(raw.payload, origin=raw.origin, index=raw.index)
    if raw.kind == "folk_rnn":
        return abc_reader.folk_rnn_tune_to_sequence(raw.payload, origin=raw.origin, index=raw.index)
    if raw.kind == "midi":
        return midi_reader.midi_to_sequence(raw.payload, origin=raw.origin, index=raw.index, **dict(raw.options))
    raise SourceError(f"{raw.origin}: unknown tune kind {raw.kind!r} (expected one of {KINDS})")


# ----------------------------------------------------------------------------- download cache


def default_cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "music_attr_vae")


def _write_json_atomic(path: str, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download(url: str, path: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Fetch ``url`` into ``path`` atomically (temp file in the same directory, then rename); returns sha256.

    Raises SourceError, naming the URL, when the download fails.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    digest.update(block)
        os.replace(tmp, path)
    except urllib.error.HTTPError as err:
        raise SourceError(
            f"could not download {url}: the server answered HTTP {err.code} {err.reason}. "
            f"Fetch the file elsewhere and pass --source=PATH (a local file or directory) instead"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise SourceError(
            f"could not download {url} ({reason}): this machine looks offline or the URL is unreachable. "
            f"Fetch the file elsewhere and pass --source=PATH (a local file or directory) instead"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return digest.hexdigest()


def fetch_folk_rnn(cache_dir: Optional[str] = None, url: Optional[str] = None,
                   timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Path of the cached folk-rnn ``data_v2`` file, downloading it on first use.

    The sha256 of the download is recorded in ``<file>.json``; a cached file
    whose content no longer matches it is downloaded again.
    """
    url = url or FOLK_RNN_URL
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    path = os.path.join(cache_dir, FOLK_RNN_FILENAME)
    record_path = path + ".json"
    if os.path.isfile(path) and os.path.isfile(record_path):
        try:
            with open(record_path, encoding="utf-8") as f:
                record = json.load(f)
            if record.get("sha256") == sha256_file(path):
                return path
        except (OSError, ValueError):
            pass
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as err:
        raise SourceError(f"cannot create the cache directory {cache_dir}: {err}") from None
    sha = download(url, path, timeout=timeout)
    if os.path.getsize(path) == 0:
        os.remove(path)
        raise SourceError(f"the download from {url} is empty")
    _write_json_atomic(record_path, {"url": url, "sha256": sha, "bytes": os.path.getsize(path)})
    return path
