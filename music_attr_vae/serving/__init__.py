"""Serving: export a model as a SavedModel, and everything that uses one.

``export`` (model -> SavedModel), ``client`` (ServedModel, the one client of a
SavedModel), ``render`` (tokens -> MIDI / ABC / PNG), ``editing`` (whole-tune
attribute editing) and ``generate`` (attribute traversals).
"""
