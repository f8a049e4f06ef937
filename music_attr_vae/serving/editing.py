"""Whole-tune attribute editing: move one or more attributes of chosen measures.

The tune is read with the project's readers (ABC, folk-rnn text or MIDI),
cut into 4/4 measures on the 24-tick grid, moved into the vocabulary's pitch
range if needed, and every measure is encoded.  The chosen measures get the
latent dims of the named attributes set through the monotone maps fitted at
export time (exactly what the SavedModel's ``set_attribute`` does) and are
decoded; every other measure is **copied**, never re-decoded, so it comes back
token for token.  The result is transposed back to the tune's own pitch.

Measure numbers
---------------
Measures are numbered as a musician counts bars in the *played* tune: repeats
and variant endings are expanded by the reader (bar 9 of a tune ``|: 8 bars :|``
is the first bar of the repeat), bar 1 is the first full bar, and a pickup
(anacrusis) before it is bar 0.  A tune is taken to start with a pickup when
its first note starts after the first barline's downbeat (so a tune whose
first full bar opens with a rest is numbered one bar off; the picture and the
JSON report show the numbers used).

Notes tied over a barline come back struck again on the downbeat (the data
convention of ``data/codec.py``); bars with no note are rests.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from music_attr_vae import fileio
from music_attr_vae.data import abc_reader, sources
from music_attr_vae.serving import abc_writer, render
from music_attr_vae.data import attributes as attrs
from music_attr_vae.data.codec import CODEC

MAX_TRANSPOSE = 36
CONTEXT_BARS = 2  # bars of context either side of the edit in the before/after picture


class EditError(ValueError):
    """A bad request, with a message naming the flag or file at fault."""


@dataclasses.dataclass
class Tune:
    """A tune as token measures, every bar from bar index 0 to the last."""

    title: str
    origin: str
    tokens: np.ndarray  # (M, 24) int32, in the vocabulary range
    shift: int  # semitones added to fit the vocabulary; outputs move by -shift
    first_number: int  # musician's number of tokens[0]: 0 with a pickup, else 1

    @property
    def numbers(self) -> np.ndarray:
        return np.arange(len(self.tokens)) + self.first_number


# ---------------------------------------------------------------- reading


def load_sequence(path: str, tune_index: Optional[int] = None, flag: str = "--tune"):
    """One tune of an ABC / folk-rnn / MIDI file as a NoteSequence.

    A file with several tunes needs ``tune_index`` (0-based, in file order).
    """
    if not os.path.isfile(path):
        raise EditError(f"{flag}={path}: no such file")
    try:
        raw = sources.read_raw_tunes(sources.resolve_source(path))
    except (sources.SourceError, OSError) as e:
        raise EditError(f"{flag}={path}: {e}") from e
    if not raw:
        raise EditError(f"{flag}={path}: no tune found in the file")
    if tune_index is None:
        if len(raw) > 1:
            raise EditError(f"{flag}={path} holds {len(raw)} tunes: choose one with --tune_index=0..{len(raw) - 1}")
        tune_index = 0
    if not 0 <= tune_index < len(raw):
        raise EditError(f"--tune_index={tune_index} is out of range: {path} holds {len(raw)} tunes (0..{len(raw) - 1})")
    try:
        return sources.raw_tune_to_sequence(raw[tune_index])
    except abc_reader.SkipTune as e:
        raise EditError(f"{flag}={path}, tune {tune_index} cannot be read: {e.reason} ({e.detail})") from e


def _has_pickup(sequence) -> bool:
    """True when the first note starts after time 0 inside bar 0 (a right-aligned pickup)."""
    if not sequence.notes:
        return False
    beat = 60.0 / (sequence.tempos[0].qpm if sequence.tempos else CODEC.DEFAULT_QPM)
    first = min(n.start_time for n in sequence.notes) / beat
    return 1e-6 < first < CODEC.beats_per_measure - 1e-6


def choose_shift(grids: np.ndarray) -> int:
    """The smallest transposition that brings every note into the vocabulary (0 if none is needed)."""
    shifts = CODEC.valid_shifts(grids, MAX_TRANSPOSE)
    if not shifts:
        low, high = CODEC.grid_pitch_bounds(grids)
        raise EditError(
            f"the tune spans MIDI {low}..{high}, wider than the model's range "
            f"{CODEC.min_pitch}..{CODEC.max_pitch}"
        )
    return min(shifts, key=lambda s: (abs(s), s < 0))


def tune_from_sequence(sequence, origin: str = "") -> Tune:
    """Cut a NoteSequence into token measures; every bar must be a 4/4 measure on the grid."""
    result = CODEC.to_grids(sequence)
    unusable = {k: v for k, v in result.dropped.items() if k != "empty"}
    if unusable:
        reasons = ", ".join(f"{v} bar(s) {k}" for k, v in sorted(unusable.items()))
        raise EditError(
            f"{origin or 'the tune'}: every bar must be a 4/4 measure on the 24-tick grid; found {reasons}"
        )
    if len(result.grids) == 0:
        raise EditError(f"{origin or 'the tune'}: no 4/4 measure with notes")
    count = int(result.measure_indices.max()) + 1
    grids = np.full((count, CODEC.ticks_per_measure), CODEC.HOLD_MARK, np.int16)
    grids[:, 0] = CODEC.REST_MARK  # silent bars (dropped as "empty") are whole-bar rests
    grids[result.measure_indices] = result.grids
    shift = choose_shift(grids)
    title = sequence.sequence_metadata.title or os.path.basename(origin) or "tune"
    return Tune(
        title=title,
        origin=origin,
        tokens=CODEC.grids_to_tokens(grids, shift),
        shift=shift,
        first_number=0 if _has_pickup(sequence) else 1,
    )


def load_tune(path: str, tune_index: Optional[int] = None) -> Tune:
    sequence = load_sequence(path, tune_index)
    origin = path if tune_index is None else f"{path}#{tune_index}"
    return tune_from_sequence(sequence, origin)


# ---------------------------------------------------------------- requests


def parse_measures(spec: str, tune: Tune, flag: str = "--measures") -> List[int]:
    """Measure numbers from "5", "5-8", "1,3,6-7" or "all"; 0-based rows of ``tune.tokens``."""
    first, last = int(tune.numbers[0]), int(tune.numbers[-1])
    if spec is None or not str(spec).strip():
        raise EditError(f"{flag} is required, e.g. {flag}=5-8 (bars {first}..{last})")
    spec = str(spec).strip()
    if spec == "all":
        return list(range(len(tune.tokens)))
    chosen = set()
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise EditError(f"{flag}={spec}: {part!r} is not a bar number or a range like 5-8")
        a = int(match.group(1))
        b = int(match.group(2)) if match.group(2) else a
        if a > b:
            raise EditError(f"{flag}={spec}: the range {a}-{b} runs backwards")
        if a < first or b > last:
            raise EditError(f"{flag}={spec}: this tune has bars {first}..{last} (bar 0 is a pickup, when present)")
        chosen.update(range(a, b + 1))
    return sorted(n - tune.first_number for n in chosen)


@dataclasses.dataclass
class Setting:
    attribute: str
    op: str  # "=", "+=" or "-="
    value: float

    def targets(self, current: np.ndarray) -> np.ndarray:
        if self.op == "=":
            return np.full_like(current, self.value)
        return current + (self.value if self.op == "+=" else -self.value)

    def __str__(self) -> str:
        return f"{self.attribute}{self.op}{self.value:g}"


def parse_settings(specs: Sequence[str], regularized: Sequence[str], flag: str = "--set") -> List[Setting]:
    """``name=value`` (absolute target) or ``name+=delta`` / ``name-=delta`` (relative to each bar)."""
    if not specs:
        raise EditError(f"{flag} is required, e.g. {flag} rhythmic_complexity=0.8")
    out, seen = [], set()
    for spec in specs:
        match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\+=|-=|=)\s*(\S+)\s*", spec)
        if not match:
            raise EditError(f"{flag}={spec!r}: expected NAME=VALUE, NAME+=DELTA or NAME-=DELTA")
        name, op, text = match.groups()
        if name not in regularized:
            known = ", ".join(regularized) or "none"
            raise EditError(f"{flag}={spec}: {name!r} is not a regularised attribute of this model ({known})")
        try:
            value = float(text)
        except ValueError:
            raise EditError(f"{flag}={spec}: {text!r} is not a number") from None
        if not np.isfinite(value):
            raise EditError(f"{flag}={spec}: the value must be finite")
        if name in seen:
            raise EditError(f"{flag}: {name} is set twice")
        seen.add(name)
        out.append(Setting(name, op, value))
    return out


# ---------------------------------------------------------------- the edit


@dataclasses.dataclass
class EditResult:
    before: np.ndarray  # (M, 24) tokens
    after: np.ndarray  # (M, 24) tokens; rows not in ``rows`` are copies of ``before``
    rows: List[int]
    report: dict


def edit_tune(
    served, tune: Tune, rows: Sequence[int], settings: Sequence[Setting], temperature: float = 0.0, seed: int = 0
) -> EditResult:
    """Move the attributes of ``rows`` of ``tune`` as ``settings`` ask, with a served model."""
    if temperature < 0 or not np.isfinite(temperature):
        raise EditError(f"--temperature={temperature}: must be a finite number >= 0")
    rows = sorted(set(int(r) for r in rows))
    before = tune.tokens
    z = served.encode(before)
    attrs_before = attrs.compute_all(before)
    z_new = z[rows].copy()
    requested: Dict[str, dict] = {}
    for setting in settings:
        column = attrs.attribute_index(setting.attribute)
        targets = setting.targets(attrs_before[rows, column])
        values, clamped = served.z_for(setting.attribute, targets)
        z_new[:, served.dim_of(setting.attribute)] = values
        requested[setting.attribute] = {"targets": targets.tolist(), "clamped": clamped.tolist()}
    after = before.copy()
    if rows:
        after[rows] = served.decode(z_new, temperature=temperature, seed=seed)
    report = _report(served, tune, rows, settings, requested, z, z_new, before, after, temperature, seed)
    return EditResult(before=before, after=after, rows=rows, report=report)


def _report(served, tune, rows, settings, requested, z, z_new, before, after, temperature, seed) -> dict:
    """The JSON report: every bar's tokens and attributes before and after, and what was asked."""
    attrs_before, attrs_after = attrs.compute_all(before), attrs.compute_all(after)
    position = {r: i for i, r in enumerate(rows)}
    bars = []
    for row, number in enumerate(tune.numbers):
        entry = {
            "bar": int(number),
            "edited": row in position,
            "attributes_before": dict(zip(attrs.ATTRIBUTE_NAMES, map(float, attrs_before[row]))),
            "attributes_after": dict(zip(attrs.ATTRIBUTE_NAMES, map(float, attrs_after[row]))),
            "tokens_before": before[row].tolist(),
            "tokens_after": after[row].tolist(),
        }
        if row in position:
            i = position[row]
            entry["targets"] = {name: r["clamped"][i] for name, r in requested.items()}
            entry["requested"] = {name: r["targets"][i] for name, r in requested.items()}
            entry["z_before"] = {s.attribute: float(z[row, served.dim_of(s.attribute)]) for s in settings}
            entry["z_after"] = {s.attribute: float(z_new[i, served.dim_of(s.attribute)]) for s in settings}
        bars.append(entry)
    return {
        "tune": {"title": tune.title, "origin": tune.origin, "bars": len(tune.tokens),
                 "first_bar": int(tune.first_number), "transposed_by": int(tune.shift)},
        "saved_model": getattr(served, "path", None),
        "settings": [str(s) for s in settings],
        "edited_bars": [int(tune.numbers[r]) for r in rows],
        "temperature": float(temperature),
        "seed": int(seed),
        "fitted_ranges": {s.attribute: served.maps[s.attribute]["value_range"] for s in settings},
        "bars": bars,
    }


# ---------------------------------------------------------------- output


OUTPUT_FILES = {
    "edited_midi": "edited.mid",
    "edited_abc": "edited.abc",
    "original_midi": "original.mid",
    "original_abc": "original.abc",
    "picture": "before_after.png",
    "report": "report.json",
}
MANIFEST = "report.json"  # lists the files, so a later run knows which files in --out are its own


def output_error(flag: str, out_dir: str, err: OSError) -> str:
    """The message for an output folder that cannot be written: the flag, the folder and the reason."""
    if isinstance(err, FileExistsError) and not err.filename:
        return f"{flag}={out_dir}: {err}"
    where = f" ({err.filename})" if err.filename and err.filename != out_dir else ""
    return f"{flag}={out_dir}: cannot write the outputs there: {err.strerror or err}{where}; nothing was changed in it"


def check_out(out_dir: str, names: Sequence[str] = tuple(OUTPUT_FILES.values()), manifest: str = MANIFEST,
              flag: str = "--out") -> None:
    """EditError now (before any work) when ``out_dir`` cannot receive the files ``names``."""
    try:
        fileio.check_output_dir(out_dir, list(names), manifest)
    except OSError as err:
        raise EditError(output_error(flag, out_dir, err)) from None


def write_outputs(out_dir: str, tune: Tune, result: EditResult) -> Dict[str, str]:
    """edited/original .mid and .abc, before_after.png and report.json in ``out_dir``, all or nothing.

    ``out_dir`` is created if needed.  An existing folder may hold other files
    (they are left alone) and the outputs of an earlier edit (listed in its
    report.json: they are replaced); a file of one of these names that the
    report does not list is never overwritten (EditError).  When any write
    fails, ``out_dir`` is left as it was.
    """
    back = -tune.shift
    settings = ", ".join(result.report["settings"])
    report = dict(result.report, files=dict(OUTPUT_FILES))

    def write(folder: str) -> None:
        paths = {k: os.path.join(folder, name) for k, name in OUTPUT_FILES.items()}
        render.write_midi(result.after, paths["edited_midi"], transpose=back)
        render.write_midi(result.before, paths["original_midi"], transpose=back)
        key = abc_writer.guess_key(result.before, back)  # the same signature for both versions
        abc_writer.write_abc(
            result.after, paths["edited_abc"], title=f"{tune.title} (edited: {settings})", transpose=back, key=key
        )
        abc_writer.write_abc(result.before, paths["original_abc"], title=tune.title, transpose=back, key=key)
        save_before_after(paths["picture"], tune, result)
        fileio.write_json(paths["report"], report)

    try:
        fileio.publish_files(out_dir, list(OUTPUT_FILES.values()), MANIFEST, write)
    except OSError as err:
        raise EditError(output_error("--out", out_dir, err)) from err
    return {k: os.path.join(out_dir, name) for k, name in OUTPUT_FILES.items()}


def picture_window(rows: Sequence[int], total: int, context: int = CONTEXT_BARS) -> Tuple[int, int]:
    """[start, stop) rows shown in the before/after picture: the edit with some context."""
    if not rows:
        return 0, min(total, 8)
    return max(0, min(rows) - context), min(total, max(rows) + context + 1)


def save_before_after(path: str, tune: Tune, result: EditResult) -> None:
    """Two piano-roll rows, before and after, around the edited bars (shaded)."""
    start, stop = picture_window(result.rows, len(tune.tokens))
    labels = [f"bar {n}" for n in tune.numbers[start:stop]]
    shown = np.concatenate([result.before[start:stop], result.after[start:stop]])
    options = dict(
        bar_labels=labels,
        highlight=[r - start for r in result.rows if start <= r < stop],
        transpose=-tune.shift,
        pitch_limits=render.pitch_bounds(shown, -tune.shift),
    )
    settings = ", ".join(result.report["settings"])
    render.save_piano_roll_rows(
        [result.before[start:stop], result.after[start:stop]],
        path,
        [f"{tune.title}: before", f"after ({settings}; edited bars shaded)"],
        [options, options],
    )
