"""The size limits of one request, shared by the graph checks, ServedModel and the CLI flags.

Stored in every export's ``metadata()["limits"]`` too; see "Limits" in ``serving/export.py``.
"""

# Size limits of one request; a larger request is refused before anything is allocated.
MAX_BATCH = 65536  # measures (N) per encode/decode/attributes/teacher_forced_nll/traverse/set_attribute call
MAX_SAMPLE = 65536  # sample's n
MAX_VALUES = 1024  # traverse's values (K)
MAX_GRID = 65536  # measures traverse decodes in one call (N * K)
LIMITS = {"MAX_BATCH": MAX_BATCH, "MAX_SAMPLE": MAX_SAMPLE, "MAX_VALUES": MAX_VALUES, "MAX_GRID": MAX_GRID}
