"""``--source`` -> source files -> raw tunes -> NoteSequences; the folk-rnn download cache.

A source is one of

* a file: an ABC tune book (``.abc``, or any text with ``X:`` lines), a folk-rnn
  token file (``M:4/4 K:Cmaj ...`` tunes separated by blank lines), or a MIDI
  file (``.mid``/``.midi``, or anything starting with ``MThd``);
* a directory: every ``.abc``/``.mid``/``.midi`` file below it (recursively);
* a glob (``corpus/*.abc``);
* ``folk_rnn``: the folk-rnn ``data_v2`` corpus (Sturm et al. 2016), downloaded
  once from :data:`FOLK_RNN_URL` into the cache directory (default
  ``~/.cache/music_attr_vae``, or ``$MUSIC_ATTR_VAE_CACHE``).  The URL is pinned
  to a commit; the download is bounded (:data:`MAX_DOWNLOAD_BYTES`), follows
  redirects only on the same host, must arrive whole and match
  :data:`FOLK_RNN_SHA256` (refused while that is unknown, unless
  ``allow_unverified``), and is written atomically with its sha256 recorded
  beside it; offline it fails within :data:`DOWNLOAD_TIMEOUT_S` seconds with a
  message pointing to ``--source=PATH``.

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
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import List, Optional, Sequence, Tuple, Union

from note_seq.protobuf import music_pb2

from music_attr_vae import fileio
from music_attr_vae.data import abc_reader, midi_reader
from music_attr_vae.data.abc_reader import SkipTune

# The folk-rnn corpus is pinned to one commit of IraKorshunova/folk-rnn, not to a branch.  This is
# the commit whose README says `python train_rnn.py config5 data/data_v2` (read from an offline
# index of the repository; the file itself could not be fetched here).  To verify or change the
# pin: download once with --allow_unverified_download, compare the sha256 and size recorded in
# <cache>/folk_rnn_data_v2.txt.json with a copy you trust (e.g. `git clone` the repository, check
# out the commit, `sha256sum data/data_v2`), and set FOLK_RNN_SHA256 / FOLK_RNN_BYTES below (or
# the environment variable FOLK_RNN_SHA256_ENV).  While the checksum is None, downloads are
# refused unless --allow_unverified_download is given.
FOLK_RNN_COMMIT = "97e785678ea3401b2fa3c85f48acd8d36f089be9"
FOLK_RNN_URL = f"https://raw.githubusercontent.com/IraKorshunova/folk-rnn/{FOLK_RNN_COMMIT}/data/data_v2"
FOLK_RNN_SHA256: Optional[str] = None
FOLK_RNN_BYTES: Optional[int] = None
FOLK_RNN_SHA256_ENV = "MUSIC_ATTR_VAE_FOLK_RNN_SHA256"
# No download may exceed this (data_v2 is a few MB of text).
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
FOLK_RNN_SOURCE = "folk_rnn"
FOLK_RNN_FILENAME = "folk_rnn_data_v2.txt"
CACHE_ENV = "MUSIC_ATTR_VAE_CACHE"
DOWNLOAD_TIMEOUT_S = 10.0
KINDS = ("abc", "folk_rnn", "midi")
# Kind of a file in a directory or glob that is none of KINDS, and its skip reason.
UNREADABLE = "unreadable"
UNREADABLE_FILE = "unreadable_file"
ABC_EXTENSIONS = (".abc",)
MIDI_EXTENSIONS = (".mid", ".midi")


class SourceError(ValueError):
    """A source that cannot be read at all (missing path, not ABC/MIDI, failed download)."""


@dataclasses.dataclass
class SourceFile:
    """One input file: absolute path, kind (``abc``, ``folk_rnn``, ``midi``) and content sha256.

    A file of a directory or glob that cannot be read as any kind has kind
    ``unreadable``, its reason in ``error``, and becomes one skipped tune.
    """

    path: str
    kind: str
    sha256: str
    error: str = ""


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


def _looks_like_abc(text: str, fields=("X:",)) -> bool:
    return any(line.startswith(fields) for line in text.splitlines())


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
    if _looks_like_abc(text, ("K:",)):  # a tune written without X:, which ABC 2.1 allows
        return "abc"
    if ext in ABC_EXTENSIONS:
        raise SourceError(f"{path}: no ABC tune in this file (no X: or K: line)")
    raise SourceError(f"{path}: not an ABC tune book, a folk-rnn token file or a MIDI file")


def _source_file(path: str, tolerant: bool = False) -> SourceFile:
    """The file at ``path``; when it cannot be read, SourceError, or (``tolerant``) an ``unreadable`` entry."""
    path = os.path.abspath(path)
    try:
        return SourceFile(path=path, kind=detect_kind(path), sha256=sha256_file(path))
    except (SourceError, OSError) as err:
        message = str(err) if isinstance(err, SourceError) else f"{path}: cannot read it ({err.strerror or err})"
        if not tolerant:
            raise SourceError(message) from None
        return SourceFile(path=path, kind=UNREADABLE, sha256="", error=message)


def _directory_files(directory: str) -> List[str]:
    found = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(ABC_EXTENSIONS + MIDI_EXTENSIONS):
                found.append(os.path.join(root, name))
    return found


def resolve_source(source: str, cache_dir: Optional[str] = None, allow_unverified: bool = False) -> List[SourceFile]:
    """The files a ``--source`` value stands for (see the module docstring); raises SourceError.

    Files of a directory or glob that cannot be read become ``unreadable``
    entries (counted as skipped tunes); a single file that cannot be read is an error.
    """
    source = str(source)
    if source == FOLK_RNN_SOURCE:
        return [_source_file(fetch_folk_rnn(cache_dir, allow_unverified=allow_unverified))]
    if os.path.isdir(source):
        paths = _directory_files(source)
        if not paths:
            raise SourceError(f"source directory {source!r} holds no .abc, .mid or .midi file")
        return [_source_file(p, tolerant=True) for p in paths]
    if os.path.isfile(source):
        return [_source_file(source)]
    if any(ch in source for ch in "*?["):
        paths = sorted(p for p in globlib.glob(source, recursive=True) if os.path.isfile(p))
        if not paths:
            raise SourceError(f"source glob {source!r} matches no file")
        return [_source_file(p, tolerant=True) for p in paths]
    raise SourceError(
        f"source {source!r} does not exist (expected an ABC/folk-rnn/MIDI file, a directory, a glob "
        f"or {FOLK_RNN_SOURCE!r})"
    )


# ----------------------------------------------------------------------------- raw tunes


def read_raw_tunes(files: Sequence[SourceFile]) -> List[RawTune]:
    """Split every source file into raw tunes (no parsing yet)."""
    tunes: List[RawTune] = []
    for sf in files:
        if sf.kind == UNREADABLE:
            tunes.append(RawTune(UNREADABLE, sf.path, 0, sf.error))
            continue
        try:
            with open(sf.path, "rb") as f:
                data = f.read()
        except OSError as err:
            tunes.append(RawTune(UNREADABLE, sf.path, 0, f"{sf.path}: cannot read it ({err.strerror or err})"))
            continue
        if sf.kind == "midi":
            tunes.append(RawTune("midi", sf.path, 0, data))
            continue
        text = decode_text(data)
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
    if raw.kind == UNREADABLE:
        raise SkipTune(UNREADABLE_FILE, str(raw.payload))
    raise SourceError(f"{raw.origin}: unknown tune kind {raw.kind!r} (expected one of {KINDS})")


# ----------------------------------------------------------------------------- download cache


def default_cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "music_attr_vae")


def _origin(url: str) -> tuple:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the same scheme, host and port as the URL asked for."""

    def __init__(self, url: str):
        self.origin = _origin(url)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        newurl = urllib.parse.urljoin(req.full_url, newurl)
        if _origin(newurl) != self.origin:
            raise _fail_download(req.full_url, f"the server redirects to another host ({newurl}); refusing to follow it")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fail_download(url: str, why: str) -> SourceError:
    return SourceError(f"could not download {url}: {why}. Fetch the file elsewhere and pass --source=PATH "
                       "(a local file or directory) instead")


def _copy_bounded(response, out, url: str, max_bytes: int) -> Tuple[int, str]:
    """Copy ``response`` into ``out``, at most ``max_bytes``; returns (bytes, sha256). SourceError if too long/short."""
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.strip().isdigit() else None
    if expected is not None and expected > max_bytes:
        raise _fail_download(url, f"the server announces {expected} bytes, more than the limit of {max_bytes}")
    digest, received = hashlib.sha256(), 0
    try:
        for block in iter(lambda: response.read(1 << 16), b""):
            received += len(block)
            if received > max_bytes:
                raise _fail_download(url, f"the response exceeds the limit of {max_bytes} bytes")
            out.write(block)
            digest.update(block)
    except http.client.IncompleteRead as err:
        received += len(err.partial)
    if expected is not None and received != expected:
        raise _fail_download(url, f"the response was cut short ({received} of {expected} bytes)")
    return received, digest.hexdigest()


def download(url: str, path: str, timeout: float = DOWNLOAD_TIMEOUT_S, *, max_bytes: int = MAX_DOWNLOAD_BYTES,
             expected_bytes: Optional[int] = None, expected_sha256: Optional[str] = None) -> str:
    """Fetch ``url`` into ``path`` atomically; returns the content's sha256.

    Nothing is written to ``path`` unless the whole response arrived: no more
    than ``max_bytes``, as many as its Content-Length (and ``expected_bytes``)
    says, with ``expected_sha256`` when given.  Redirects are followed only on
    the same host.  Raises SourceError, naming the URL.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    opener = urllib.request.build_opener(_SameOriginRedirects(url))
    try:
        with fileio.atomic_path(path, ".part") as tmp, open(tmp, "wb") as out:
            with opener.open(url, timeout=timeout) as response:
                received, sha = _copy_bounded(response, out, url, max_bytes)
            if expected_bytes is not None and received != expected_bytes:
                raise _fail_download(url, f"got {received} bytes, expected {expected_bytes}")
            if expected_sha256 is not None and sha != expected_sha256.lower():
                raise _fail_download(url, f"its sha256 is {sha}, expected {expected_sha256}")
    except urllib.error.HTTPError as err:
        raise _fail_download(url, f"the server answered HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        if isinstance(err, SourceError):
            raise
        if isinstance(getattr(err, "reason", None), SourceError):
            raise err.reason from None
        reason = getattr(err, "reason", None) or err
        raise _fail_download(url, f"{reason}; this machine looks offline or the URL is unreachable") from None
    return sha


def _cached_copy(path: str, url: str, expected_sha256: Optional[str]) -> Optional[str]:
    """``path`` when its record says it came whole from ``url`` (and is verified, when a checksum is known)."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            record = json.load(f)
        if record.get("url") != url or record.get("bytes") != os.path.getsize(path):
            return None
        sha = sha256_file(path)
    except (OSError, ValueError, AttributeError):
        return None
    if sha != record.get("sha256") or (expected_sha256 is not None and sha != expected_sha256.lower()):
        return None
    return path


def fetch_folk_rnn(cache_dir: Optional[str] = None, url: Optional[str] = None,
                   timeout: float = DOWNLOAD_TIMEOUT_S, *, sha256: Optional[str] = None,
                   allow_unverified: bool = False, max_bytes: int = MAX_DOWNLOAD_BYTES) -> str:
    """Path of the cached folk-rnn ``data_v2`` file, downloading it on first use.

    The expected checksum is ``sha256``, else ``$MUSIC_ATTR_VAE_FOLK_RNN_SHA256``,
    else :data:`FOLK_RNN_SHA256`.  With none known the download is refused
    unless ``allow_unverified`` (``--allow_unverified_download``).  The
    download's sha256 and size are recorded in ``<file>.json``; a cached copy
    is reused only when it still matches them (and the expected checksum).
    """
    url = url or FOLK_RNN_URL
    expected = sha256 or os.environ.get(FOLK_RNN_SHA256_ENV) or FOLK_RNN_SHA256
    if expected is None and not allow_unverified:
        raise SourceError(
            f"the folk-rnn corpus at {url} has no pinned sha256 (FOLK_RNN_SHA256 in music_attr_vae/data/sources.py, "
            f"or ${FOLK_RNN_SHA256_ENV}), so a download cannot be verified. Set the checksum, pass "
            "--allow_unverified_download to accept it unverified, or pass --source=PATH to a local copy"
        )
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    path = os.path.join(cache_dir, FOLK_RNN_FILENAME)
    if _cached_copy(path, url, expected):
        return path
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as err:
        raise SourceError(f"cannot create the cache directory {cache_dir}: {err}") from None
    sha = download(url, path, timeout=timeout, max_bytes=max_bytes, expected_sha256=expected,
                   expected_bytes=FOLK_RNN_BYTES if url == FOLK_RNN_URL else None)
    size = os.path.getsize(path)
    if size == 0:
        os.remove(path)
        raise SourceError(f"the download from {url} is empty")
    fileio.write_json(path + ".json", {"url": url, "sha256": sha, "bytes": size, "verified": expected is not None},
                      indent=2, sort_keys=True)
    return path
