"""Helpers shared by the serving tests."""

from __future__ import annotations

import numpy as np

from music_attr_vae.data import abc_reader

from music_attr_vae.data.codec import CODEC


def canonical(tokens) -> np.ndarray:
    """What reading token measures back gives, by the data conventions of data/codec.py.

    A note held over the barline is struck again on tick 0, a rest restated
    while silent is a HOLD, silence at the start of a measure is a REST.
    """
    out = np.array(tokens, np.int32)
    sounding = None  # pitch token, REST, or None before anything
    for m in range(out.shape[0]):
        for t in range(out.shape[1]):
            tok = out[m, t]
            if tok < CODEC.num_pitches:
                sounding = tok
            elif tok == CODEC.rest:
                if sounding == CODEC.rest and t > 0:
                    out[m, t] = CODEC.hold
                sounding = CODEC.rest
            elif t == 0:
                out[m, t] = CODEC.rest if sounding in (None, CODEC.rest) else sounding
                sounding = out[m, t]
    return out


def read_abc_tokens(text: str, shift: int = 0):
    """(GridResult, tokens) of an ABC tune read with the project's reader, moved by ``shift``."""
    result = CODEC.to_grids(abc_reader.abc_tune_to_sequence(text, origin="test", index=0))
    return result, CODEC.grids_to_tokens(result.grids, shift)


def notes_in_beats(sequence):
    """Sorted (start, end, pitch) of a NoteSequence, in quarter-note beats."""
    beat = 60.0 / (sequence.tempos[0].qpm if sequence.tempos else 120.0)
    return sorted((round(n.start_time / beat, 6), round(n.end_time / beat, 6), n.pitch) for n in sequence.notes)
