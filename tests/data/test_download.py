"""The folk-rnn download is verified: pinned URL, length, checksum, size bound, same-host redirects.

Everything is served by a local HTTP server on 127.0.0.1; nothing touches the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import pathlib
import re
import subprocess
import sys

import pytest
from http_helpers import serve

from music_attr_vae.data import sources
from music_attr_vae.data.sources import SourceError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BODY = ("M:4/4\nK:Cmaj\nC D E F G A B c | c B A G F E D C |\n\n" * 400).encode()
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /good, /truncated (announces the whole body, sends half), /huge (no length, endless),
    /big_length (announces 1 GB), /away (redirect to localhost), /here (redirect to /good)."""

    hits: dict = {}

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits[self.path] = type(self).hits.get(self.path, 0) + 1
        port = self.server.server_address[1]
        if self.path == "/good":
            self._send(200, {"Content-Length": str(len(BODY))}, BODY)
        elif self.path == "/truncated":
            self._send(200, {"Content-Length": str(len(BODY))}, BODY[: len(BODY) // 2])
            self.close_connection = True
        elif self.path == "/huge":
            self._send(200, {"Connection": "close"}, b"")
            for _ in range(64):
                self.wfile.write(b"A" * 65536)
            self.close_connection = True
        elif self.path == "/big_length":
            self._send(200, {"Content-Length": str(10**9)}, b"x" * 1000)
            self.close_connection = True
        elif self.path == "/away":
            self._send(302, {"Location": f"http://localhost:{port}/good", "Content-Length": "0"}, b"")
        elif self.path == "/here":
            self._send(302, {"Location": "/good", "Content-Length": "0"}, b"")
        else:
            self._send(404, {"Content-Length": "0"}, b"")

    def _send(self, code, headers, body):
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.hits = {}
    with serve(_Handler) as base:
        yield base


def _fetch(base, route, cache, **kwargs):
    kwargs.setdefault("sha256", SHA)
    return sources.fetch_folk_rnn(cache_dir=str(cache), url=f"{base}{route}", **kwargs)


def test_the_url_is_pinned_to_a_commit():
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/IraKorshunova/folk-rnn/[0-9a-f]{40}/data/data_v2",
                        sources.FOLK_RNN_URL)
    assert sources.FOLK_RNN_COMMIT in sources.FOLK_RNN_URL and "/master/" not in sources.FOLK_RNN_URL


def test_a_verified_download_is_cached_and_reused(server, tmp_path):
    cache = tmp_path / "cache"
    path = pathlib.Path(_fetch(server, "/good", cache))
    assert path.read_bytes() == BODY
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record == {"url": f"{server}/good", "sha256": SHA, "bytes": len(BODY), "verified": True}
    assert _fetch(server, "/good", cache) == str(path) and _Handler.hits["/good"] == 1
    # Same-host redirects are followed.
    assert pathlib.Path(_fetch(server, "/here", tmp_path / "c2")).read_bytes() == BODY


@pytest.mark.parametrize("route, match", [
    ("/truncated", r"cut short \(\d+ of \d+ bytes\)"),
    ("/huge", "exceeds the limit of 1000000 bytes"),
    ("/big_length", "announces 1000000000 bytes"),
    ("/away", "redirects to another host .*localhost"),
])
def test_bad_responses_are_refused_and_never_cached(server, tmp_path, route, match):
    cache = tmp_path / "cache"
    with pytest.raises(SourceError, match=match) as err:
        _fetch(server, route, cache, max_bytes=1_000_000)
    assert f"{server}{route}" in str(err.value) and "--source=PATH" in str(err.value)
    assert list(cache.iterdir()) == []  # nothing half-written, nothing to reuse
    assert _Handler.hits.get("/good", 0) == 0  # the other host was never asked


def test_a_wrong_checksum_is_refused(server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(SourceError, match=f"sha256 is {SHA}, expected 0+"):
        _fetch(server, "/good", cache, sha256="0" * 64)
    assert list(cache.iterdir()) == []
    # A cached copy that does not match the pinned checksum is not reused either.
    _fetch(server, "/good", cache)
    with pytest.raises(SourceError, match="expected 1+"):
        _fetch(server, "/good", cache, sha256="1" * 64)


def test_an_unknown_checksum_needs_the_flag(server, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FOLK_RNN_SHA256", None)
    monkeypatch.delenv(sources.FOLK_RNN_SHA256_ENV, raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(SourceError, match="no pinned sha256.*--allow_unverified_download.*--source=PATH"):
        _fetch(server, "/good", cache, sha256=None)
    assert not cache.exists() and _Handler.hits == {}
    path = pathlib.Path(_fetch(server, "/good", cache, sha256=None, allow_unverified=True))
    assert json.loads(path.with_name(path.name + ".json").read_text())["verified"] is False
    # The environment variable pins it too; a wrong one is refused.
    monkeypatch.setenv(sources.FOLK_RNN_SHA256_ENV, SHA)
    assert _fetch(server, "/good", cache, sha256=None) == str(path)
    monkeypatch.setenv(sources.FOLK_RNN_SHA256_ENV, "2" * 64)
    with pytest.raises(SourceError, match="expected 2+"):
        _fetch(server, "/good", tmp_path / "other", sha256=None)


def test_cli_refuses_an_unverified_folk_rnn_download_unless_told(server, tmp_path):
    base = [sys.executable, "-c",
            "import sys; from music_attr_vae.data import sources; sources.FOLK_RNN_URL = sys.argv.pop(1); "
            "from music_attr_vae.cli import main; sys.exit(main())",
            f"{server}/good", "prepare", "--source=folk_rnn", f"--cache_dir={tmp_path / 'cache'}", "--noprogress",
            "--max_shift=0"]
    refused = subprocess.run(base + [f"--output_dir={tmp_path / 'a'}"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "--allow_unverified_download" in refused.stderr, refused.stderr
    accepted = subprocess.run(base + [f"--output_dir={tmp_path / 'b'}", "--allow_unverified_download"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert accepted.returncode == 0, accepted.stderr
    assert "raw tunes read: 400" in accepted.stdout


def test_train_takes_the_same_flag_for_its_default_corpus(server, tmp_path, monkeypatch):
    """`train` with no --source prepares the folk-rnn corpus: refused unverified, accepted with the flag."""
    from music_attr_vae import run_data
    from music_attr_vae.configs_loader import load_config

    monkeypatch.setattr(sources, "FOLK_RNN_URL", f"{server}/good")
    monkeypatch.setattr(sources, "FOLK_RNN_SHA256", None)
    monkeypatch.delenv(sources.FOLK_RNN_SHA256_ENV, raising=False)
    config = load_config("quick", {"data.max_shift": 0})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(SourceError, match="--allow_unverified_download"):
        run_data.resolve_data(config, str(tmp_path / "a"), None, cache_dir=str(tmp_path / "cache"), progress=False)
    data_dir, summary = run_data.resolve_data(config, str(tmp_path / "b"), None, cache_dir=str(tmp_path / "cache"),
                                              progress=False, allow_unverified_download=True)
    assert pathlib.Path(data_dir, "summary.json").exists() and summary["totals"]["raw_tunes"] == 400
