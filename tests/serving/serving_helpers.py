"""Helpers shared by the serving tests."""

from __future__ import annotations

import numpy as np

from music_attr_vae.data import abc_reader, measures


def canonical(tokens) -> np.ndarray:
    """What reading token measures back gives, by the data conventions of measures.py.

    A note held over the barline is struck again on tick 0, a rest restated
    while silent is a HOLD, silence at the start of a measure is a REST.
    """
    out = np.array(tokens, np.int32)
    sounding = None  # pitch token, REST, or None before anything
    for m in range(out.shape[0]):
        for t in range(out.shape[1]):
            tok = out[m, t]
            if tok < measures.NUM_PITCHES:
                sounding = tok
            elif tok == measures.REST:
                if sounding == measures.REST and t > 0:
                    out[m, t] = measures.HOLD
                sounding = measures.REST
            elif t == 0:
                out[m, t] = measures.REST if sounding in (None, measures.REST) else sounding
                sounding = out[m, t]
    return out


def read_abc_tokens(text: str, shift: int = 0):
    """(GridResult, tokens) of an ABC tune read with the project's reader, moved by ``shift``."""
    result = measures.sequence_to_grids(abc_reader.abc_tune_to_sequence(text, origin="test", index=0))
    return result, measures.grids_to_tokens(result.grids, shift)


def notes_in_beats(sequence):
    """Sorted (start, end, pitch) of a NoteSequence, in quarter-note beats."""
    beat = 60.0 / (sequence.tempos[0].qpm if sequence.tempos else 120.0)
    return sorted((round(n.start_time / beat, 6), round(n.end_time / beat, 6), n.pitch) for n in sequence.notes)
